"""`sltk eval` on a real (smoke) run: resumable generation, scores and files."""

from __future__ import annotations

import csv
import json

import pytest

from sltk import evaluate
from sltk.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def run_copy(smoke_run, tmp_path_factory):
    """The shared finished smoke run, copied: these tests add benchmark answers to it."""
    import shutil

    folder = tmp_path_factory.mktemp("runs") / "ev"
    shutil.copytree(smoke_run, folder)
    return folder


def _bench(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def test_eval_scores_a_longbench_write_file_and_resumes(run_copy, tmp_path, capsys):
    smoke_run = run_copy
    bench = _bench(tmp_path / "longbench_write_en.jsonl", [
        {"prompt": "Write a 300-word story about a lighthouse.", "type": "Literature", "length": 300},
        {"prompt": "Write a 1000-word guide to growing tomatoes.", "type": "Guide", "length": 1000},
        {"prompt": "Write a 5000-word history of ships.", "type": "History", "length": 5000},
    ])
    args = ["eval", "--run", "ev", "--runs-dir", str(smoke_run.parent), "--benchmark", str(bench),
            "--max-length", "2000", "--max-new-tokens", "24"]
    assert main(args) == 0
    out = smoke_run / "bench" / "longbench_write_en"
    table = (out / "results.csv").read_text().splitlines()
    assert table[0].startswith("model,n,mean_words,cap_hit,S_l")
    assert [line.split(",")[:2] for line in table[1:]] == [["base", "2"], ["generator_iter_1", "2"]]  # 5000 dropped
    for name in ("required_vs_produced.png", "S_l_by_bucket.png", "degradation.png", "degradation.csv"):
        assert (out / name).stat().st_size > 0
    base = (out / "base.jsonl").read_text()
    # a second run generates nothing new: the outputs are read back
    assert main(args) == 0
    assert (out / "base.jsonl").read_text() == base
    assert "results, outputs and figures" in capsys.readouterr().out.lower()
    # the forced-choice judge scores every answer; the answers are read back, not generated again
    assert main(args + ["--judge", "--judge-mode", "choice"]) == 0
    assert (out / "base.jsonl").read_text() == base
    rows = {r["model"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert rows["base"]["judge_parse_rate"] == "1.0" and rows["generator_iter_1"]["judge_mode"] == "choice"
    assert 0 <= float(rows["base"]["S_q"]) <= 100
    judged = [json.loads(line) for line in (out / "generator_iter_1.judge_choice.jsonl").read_text().splitlines()]
    assert len(judged) == 2 and all(len(r["scores"]) == 6 for r in judged)


def test_eval_on_ruler_follows_each_required_length(run_copy, tmp_path):
    bench = _bench(tmp_path / "longwrite_ruler.jsonl", [
        {"prompt": "Write a 1000-word essay on rivers.", "type": "Ruler", "length": 1000},
        {"prompt": "Write a 2000-word essay on rivers.", "type": "Ruler", "length": 2000},
    ])
    assert main(["eval", "--run", "ev", "--runs-dir", str(run_copy.parent), "--benchmark", str(bench),
                 "--max-new-tokens", "16"]) == 0
    rows = list(csv.DictReader((run_copy / "bench" / "longwrite_ruler" / "ruler_by_length.csv").open()))
    assert [(r["model"], r["required"]) for r in rows] == [
        ("base", "1000"), ("base", "2000"), ("generator_iter_1", "1000"), ("generator_iter_1", "2000")]
    assert all(int(r["n"]) == 1 and float(r["ratio"]) < 0.1 for r in rows)  # 16 tokens against 1,000+ words


def test_eval_refuses_an_unknown_model_and_a_missing_run(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown model"):
        evaluate.model_names(1, ["generator_iter_3"])
    assert main(["eval", "--run", "nope", "--runs-dir", str(tmp_path), "--benchmark", "x.jsonl"]) == 2
    assert "No run at" in capsys.readouterr().err
