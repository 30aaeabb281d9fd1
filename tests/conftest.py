"""Shared fixtures. Nothing may reach for a hub: the suite runs offline."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `make test` runs the suite in parallel workers (pytest-xdist): each worker, and every process it starts
# (runs, kernels, servers), takes its share of the cores instead of all of them, so that they do not contend.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

import pytest  # noqa: E402
import torch  # noqa: E402

from sltk import embedded  # noqa: E402
from sltk.models import LoadedModel, load_base  # noqa: E402


def pytest_collection_modifyitems(items):
    """Under pytest-xdist, every test that uses the shared smoke run goes to one worker, so it is made once."""
    for item in items:
        if "smoke_run" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("smoke_run"))


@pytest.fixture(scope="session")
def embedded_dir():
    """The converted embedded checkpoint (converted on first use)."""
    return embedded.ensure_checkpoint()


@pytest.fixture(scope="session")
def tokenizer(embedded_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_dir)
    tok.padding_side = "left"
    return tok


def tiny_model(tokenizer, seed: int = 0) -> LoadedModel:
    """A randomly initialised two-layer Llama with the embedded model's vocabulary, for fast unit tests."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).eval()
    return LoadedModel(model, tokenizer, "tiny-random-llama", None, torch.float32, "cpu")


@pytest.fixture()
def tiny(tokenizer):
    return tiny_model(tokenizer)


@pytest.fixture(scope="session")
def smol_bf16(embedded_dir):
    """The real embedded model, unquantised, in bf16."""
    return load_base(quantization=None, dtype=torch.bfloat16)


@pytest.fixture(scope="session")
def smol_fp32(embedded_dir):
    """The real embedded model, unquantised, in float32 (the CPU default)."""
    return load_base(quantization=None)


@pytest.fixture(scope="session")
def smol_nf4(embedded_dir):
    """The real embedded model in 4-bit NF4 (QLoRA's base)."""
    return load_base(quantization="nf4")


SMOKE_RUN_ARGS = ["--preset", "smoke", "--set", "iterations=1", "--set", "eval.prompts=1"]


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """One real, uninterrupted `sltk run` of one smoke iteration (queries to both trained roles, the final
    dataset, the held-out answers), shared by the tests that need a finished run. Copy it to change it."""
    import subprocess
    import sys

    runs = tmp_path_factory.mktemp("shared_runs")
    subprocess.run([sys.executable, "-m", "sltk.cli", "run", "--name", "ref", "--runs-dir", str(runs),
                    *SMOKE_RUN_ARGS], check=True, capture_output=True, timeout=900)
    return runs / "ref"
