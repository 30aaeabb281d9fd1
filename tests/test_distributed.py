"""Training in several processes: `accelerate launch` with 2 CPU processes (gloo) against one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_processes import RECORDS, config, model

from sltk.launch import launcher
from sltk.train import MARKER, TrainError, checkpoint_dir, train_role

SCRIPT = Path(__file__).parent / "train_processes.py"


def _launch(out: Path, *args: str) -> subprocess.CompletedProcess:
    """The script under `accelerate launch` in 2 processes (on a machine without CUDA they use gloo)."""
    command = launcher(2) + [str(SCRIPT), str(out), "1", *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def test_two_processes_train_the_adapter_one_process_does_with_the_same_global_batch(tokenizer, tmp_path):
    one = model(tokenizer)  # one process, 2 batches accumulated a step; two processes, 1 batch each
    ref = train_role(one, "generator", RECORDS, tmp_path / "one" / "generator", config(2), progress=False)
    assert ref["complete"] and ref["steps"] == 6

    out = tmp_path / "two" / "generator"
    _launch(out, "4")  # stopped in the middle of epoch 2 (3 steps an epoch), then resumed in 2 processes again
    assert (checkpoint_dir(out) / "checkpoint-4" / MARKER).is_file() and not out.exists()
    with pytest.raises(TrainError, match="made by 2 training processes"):
        train_role(model(tokenizer), "generator", RECORDS, out, config(1), progress=False)
    _launch(out)
    stats = [json.loads((out.parent / f"generator.stats-{rank}.json").read_text()) for rank in (0, 1)]
    assert all(s["complete"] and s["steps"] == 6 and s["resumed_from_step"] == 4 for s in stats)

    got, want = _weights(out), _weights(tmp_path / "one" / "generator")
    assert got.keys() == want.keys()
    for name in want:
        assert torch.allclose(got[name], want[name], atol=1e-5), name
    assert any(want[n].abs().max() > 1e-2 for n in want if "lora_B" in n)  # the adapter moved
    assert stats[0]["losses"] == pytest.approx(ref["losses"], abs=1e-5) and stats[0]["losses"] == stats[1]["losses"]


@pytest.mark.integration
def test_sltk_train_in_two_processes_makes_the_adapter_of_one(embedded_dir, tmp_path):
    """`sltk train --train-processes 2` on the embedded model launches `accelerate` itself; its adapter is
    the one-process adapter of the same global batch (2 batches a step there, 1 in each process here)."""
    data = tmp_path / "records.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS[:4]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("SLTK_KILL_AT", None)

    def train(name: str, *flags: str) -> Path:
        cmd = [sys.executable, "-m", "sltk.cli", "train", "--data", str(data), "--preset", "smoke", "--name", name,
               "--runs-dir", str(tmp_path), "--epochs", "1", "--set", "dtype=float32", *flags]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        return tmp_path / name / "trained" / "records" / "generator"

    one = train("one", "--set", "train.grad_accum=2")
    two = train("two", "--set", "train.grad_accum=1", "--train-processes", "2")
    got, want = _weights(two), _weights(one)
    assert got.keys() == want.keys()
    scale = max(float(w.abs().max()) for w in want.values())
    assert max(float((got[k] - want[k]).abs().max()) for k in want) <= 1e-4 * scale
    steps = json.loads((tmp_path / "two" / "manifest.json").read_text())["steps"]["train/records"]
    assert steps["steps"] == 2  # 4 records, 2 processes: 2 steps of 2 batches each
    assert not list(tmp_path.glob("two/trained/records/.*"))  # the records handed to the launch are gone


@pytest.mark.integration
def test_an_iterations_training_step_launched_in_two_processes_is_marked_and_loads(embedded_dir, tmp_path):
    from sltk.config import preset
    from sltk.models import load_roles
    from sltk.pipeline import Pipeline
    from sltk.records import write_jsonl

    config = preset("smoke", name="launched", **{"train.processes": 2, "train.epochs": 1})
    pipeline = Pipeline(config, tmp_path / "launched", progress=False)
    write_jsonl(pipeline.iteration_dir(1) / "sft_generator.jsonl", RECORDS[:4])
    pipeline.train(1, "generator")

    step = pipeline.manifest["steps"]["iter_1/train_generator"]
    assert step["records"] == 4 and step["final_loss"] > 0
    adapter = pipeline.iteration_dir(1) / "adapters" / "generator"
    assert json.loads((adapter / MARKER).read_text())["steps"] == 2  # 4 records, 2 processes, 1 batch each a step
    assert not checkpoint_dir(adapter).exists()
    loaded = load_roles(pipeline.loaded, adapter.parent, roles=["generator"])  # the model loads again here
    assert "generator" in loaded.model.peft_config
