"""benchmarks/gpu.py on the CPU: the structured random model and the measuring run (no GPU needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from transformers import AutoModelForCausalLM

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu.py"


def test_random_model_writes_paragraphs_and_sentences_and_measures_on_cpu(embedded_dir, tmp_path):
    model = tmp_path / "random"
    run = subprocess.run([sys.executable, str(SCRIPT), "model", "--shape", "tiny", "--tokenizer", str(embedded_dir),
                          "--out", str(model)], capture_output=True, text=True, check=True)
    assert "sampled shares {'\\n\\n': 0.03, '.': 0.06}" in run.stdout
    net = AutoModelForCausalLM.from_pretrained(model)
    assert net.config.vocab_size == 50000 and float(net.lm_head.weight[49152:].detach().abs().sum()) == 0.0
    out = tmp_path / "result.json"
    subprocess.run([sys.executable, str(SCRIPT), "memory", "--model", str(model), "--preset", "smoke",
                    "--train-steps", "2", "--out", str(out)], capture_output=True, text=True, check=True)
    result = json.loads(out.read_text())
    assert set(result["rows"]) == {"drafts", "extension", "training"}
    drafts, ext = result["rows"]["drafts"], result["rows"]["extension"]
    assert drafts["new_tokens"] == 8 * 96  # every row held to the cap
    assert ext["requests"] == 9 and ext["new_tokens"] == 8 * 96 + 84
    assert result["rows"]["training"]["requests"] == 2 and result["stray_token_probability"] < 0.05
    assert all(r["estimate_gib"] > 0 for r in result["rows"].values())

