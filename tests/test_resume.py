"""A real run of the loop (smoke preset, embedded model) killed with SIGKILL and resumed.

The resumed run must end with the same records, ids and counts as an uninterrupted one:
nothing lost, nothing written twice.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sltk.records import read_jsonl

pytestmark = pytest.mark.integration

ARGS = ["--preset", "smoke", "--set", "iterations=1", "--set", "eval.prompts=1"]


def _cmd(runs: Path, name: str) -> list[str]:
    return [sys.executable, "-m", "sltk.cli", "run", "--name", name, "--runs-dir", str(runs), *ARGS]


def _run(runs: Path, name: str) -> None:
    subprocess.run(_cmd(runs, name), check=True, capture_output=True, timeout=900)


def _kill_when(runs: Path, name: str, ready) -> None:
    """Start a run and SIGKILL it as soon as `ready(run_folder)` is true."""
    folder = runs / name
    proc = subprocess.Popen(_cmd(runs, name), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if ready(folder):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
    pytest.fail(f"the run ended (code {proc.returncode}) before the kill point was reached")


def _steps(folder: Path) -> dict:
    path = folder / "manifest.json"
    return json.loads(path.read_text())["steps"] if path.exists() else {}


def _snapshot(folder: Path) -> dict:
    """Ids (in sorted order, duplicates kept) and ok-counts of every record file of the run."""
    out = {}
    for path in sorted(folder.rglob("*.jsonl")):
        if path.name.endswith(".tries.jsonl"):
            continue
        recs = read_jsonl(path)
        ids = sorted(r.get("id", "") for r in recs)
        out[str(path.relative_to(folder))] = {"ids": ids, "ok": sum(bool(r.get("ok", True)) for r in recs)}
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    _run(runs, "ref")
    return _snapshot(runs / "ref"), runs / "ref"


def _assert_same(folder: Path, reference) -> None:
    snap, ref_folder = reference
    assert set(_steps(folder)) == set(_steps(ref_folder))
    assert snap.keys() == _snapshot(folder).keys()
    for name, expected in snap.items():
        got = _snapshot(folder)[name]
        assert len(got["ids"]) == len(set(got["ids"])), f"{name} has duplicate ids"
        assert got == expected, f"{name} differs from the uninterrupted run"


def test_kill_during_generation_then_resume(tmp_path, reference):
    def drafting(folder):  # queries are complete and the drafts are being generated
        return "iter_1/queries" in _steps(folder) and "iter_1/drafts" not in _steps(folder)

    _kill_when(tmp_path, "gen", drafting)
    assert "iter_1/drafts" not in _steps(tmp_path / "gen")
    _run(tmp_path, "gen")
    _assert_same(tmp_path / "gen", reference)


def test_kill_during_training_then_resume(tmp_path, reference):
    def training(folder):  # a training checkpoint exists and the Generator's adapter is not final
        ckpt = folder / "iter_1/adapters/generator.ckpt/state.pt"
        return ckpt.exists() and "iter_1/train_generator" not in _steps(folder)

    _kill_when(tmp_path, "train", training)
    assert "iter_1/train_generator" not in _steps(tmp_path / "train")
    _run(tmp_path, "train")
    _assert_same(tmp_path / "train", reference)
    # the resumed training ends with the same adapter as the uninterrupted one
    from safetensors.torch import load_file

    ref = load_file(reference[1] / "iter_1/adapters/generator/adapter_model.safetensors")
    got = load_file(tmp_path / "train/iter_1/adapters/generator/adapter_model.safetensors")
    assert ref.keys() == got.keys()
    assert all((ref[k].float() - got[k].float()).abs().max() < 1e-4 for k in ref)
