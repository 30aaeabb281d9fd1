"""The `sltk` command: clear errors, and the quick demo on the real embedded model."""

import pytest

from sltk.cli import main


def test_set_needs_key_value(tmp_path, capsys):
    assert main(["run", "--runs-dir", str(tmp_path), "--set", "train.lr"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_unknown_setting_is_named(tmp_path, capsys):
    assert main(["run", "--runs-dir", str(tmp_path), "--set", "train.lrr=1"]) == 2
    assert "unknown setting(s) ['lrr']" in capsys.readouterr().err


def test_missing_seed_file_is_named(tmp_path, capsys):
    assert main(["drafts", "--seeds", str(tmp_path / "none.jsonl")]) == 2
    assert "none.jsonl does not exist" in capsys.readouterr().err


def test_wrong_model_is_named(capsys):
    assert main(["drafts", "--model", "./no/such/model"]) == 2
    assert "no such folder" in capsys.readouterr().err


@pytest.mark.integration
def test_demo_prints_a_length_table(capsys):
    assert main(["drafts", "-n", "3", "--max-new-tokens", "24", "--batch-size", "3"]) == 0
    out = capsys.readouterr().out
    assert "with roles ['extender', 'generator']" in out and "nf4" in out
    assert out.count("seed-en-00") == 3
    assert "tokens/s" in out


def test_train_data_is_checked_before_a_model_loads(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "none.jsonl"), "--runs-dir", str(tmp_path)]) == 2
    assert "none.jsonl does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "Q"}]}\n')
    assert main(["train", "--data", str(bad), "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl: record 1:" in err and "assistant" in err
    assert not (tmp_path / "train").exists()  # nothing written for a refused start


def test_dpo_needs_a_run_and_an_adapter(tmp_path, capsys):
    assert main(["dpo", "--name", "nothing", "--runs-dir", str(tmp_path)]) == 2
    assert "No run at" in capsys.readouterr().err


@pytest.mark.integration
def test_agentwrite_train_and_dpo_on_the_smoke_preset(tmp_path, capsys):
    """`sltk agentwrite`, killed (SIGKILL) in its plans and in its sections (half a line written) and
    run again each time, makes data, trains a Generator and prints the table;
    `sltk train --data` and `sltk dpo` work on what it wrote; a second `sltk agentwrite` finds every
    step done."""
    import json
    import os
    import subprocess
    import sys

    from datasets import load_dataset

    runs = str(tmp_path)
    command = [sys.executable, "-m", "sltk.cli", "agentwrite", "--preset", "smoke", "--name", "aw", "--runs-dir", runs]
    for kill in ("plans.jsonl:1", "sections.jsonl:2:torn"):
        killed = subprocess.run(command, env={**os.environ, "SLTK_KILL_AT": kill}, capture_output=True, text=True)
        assert killed.returncode == -9, f"{kill} not reached: {killed.stderr[-2000:]}"
    assert main(["agentwrite", "--preset", "smoke", "--name", "aw", "--runs-dir", runs]) == 0
    aw = tmp_path / "aw" / "agentwrite"
    lines = {n: (aw / f"{n}.jsonl").read_text() for n in ("plans", "sections", "texts")}
    assert all(text.endswith("\n") for text in lines.values())  # no partial line
    plans = [json.loads(line) for line in lines["plans"].splitlines()]
    sections = [json.loads(line) for line in lines["sections"].splitlines()]
    assert sorted(p["id"] for p in plans) == sorted(json.loads(t)["id"] for t in lines["texts"].splitlines())
    assert len(plans) == 3 and len({p["id"] for p in plans}) == 3
    for plan in plans:  # each section written once, none missing
        steps = sorted(s["step"] for s in sections if s["query_id"] == plan["id"])
        if plan["ok"] and not any(s["empty"] for s in sections if s["query_id"] == plan["id"]):
            assert steps == list(range(1, len(plan["steps"]) + 1))
    out = capsys.readouterr().out
    assert "AgentWrite:" in out and "| agentwrite |" in out and "| control |" in out
    folder = tmp_path / "aw"
    steps = json.loads((folder / "manifest.json").read_text())["steps"]
    assert {"agentwrite/data", "agentwrite/train_generator", "eval/answers"} <= set(steps)
    dataset = folder / "agentwrite" / "dataset.jsonl"
    assert (folder / "agentwrite" / "adapters" / "generator" / "adapter_config.json").is_file()

    assert main(["agentwrite", "--preset", "smoke", "--name", "aw", "--runs-dir", runs]) == 0
    again = json.loads((folder / "manifest.json").read_text())["steps"]
    assert again == steps  # nothing redone

    assert main(["train", "--data", str(dataset), "--preset", "smoke", "--name", "t", "--runs-dir", runs,
                 "--loss", "sequence", "--epochs", "1"]) == 0
    assert (tmp_path / "t" / "trained" / "dataset" / "generator" / "adapter_config.json").is_file()
    capsys.readouterr()

    assert main(["dpo", "--name", "aw", "--runs-dir", runs, "-k", "2", "--lengths", "40,80"]) == 0
    assert "TRL's conversational format" in capsys.readouterr().out
    stats = json.loads((folder / "dpo" / "stats.json").read_text())
    assert stats["prompts"] == 3 and stats["quality"].startswith("proxy")
    assert len(load_dataset("json", data_files=str(folder / "dpo" / "samples.jsonl"), split="train")) == 6
    if stats["pairs"]:
        pairs = load_dataset("json", data_files=str(folder / "dpo" / "pairs.jsonl"), split="train")
        assert pairs[0]["chosen"][0]["role"] == "assistant"


def test_set_values_are_yaml_and_exponents_are_numbers():
    from sltk.cli import _parse_value

    assert [_parse_value(v) for v in ("3e-4", "12", "1.5", "true", "null", "[en, zh]", "embedded")] == [
        3e-4, 12, 1.5, True, None, ["en", "zh"], "embedded"]


@pytest.mark.parametrize("name", ["../../x", "/tmp/x", "a/b", ".hidden", ""])
def test_a_run_name_cannot_leave_the_runs_folder(name, tmp_path, capsys):
    assert main(["run", "--name", name, "--runs-dir", str(tmp_path), "--preset", "smoke"]) == 2
    assert "plain folder name" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_set_on_an_existing_run_without_preset_is_refused(tmp_path, capsys):
    from sltk.config import preset
    from sltk.pipeline import Pipeline

    Pipeline(preset("smoke", name="r"), tmp_path / "r").mark("iter_1/queries", records=1)
    assert main(["run", "--name", "r", "--runs-dir", str(tmp_path), "--set", "train.lr=0.1"]) == 2
    assert "--set with the existing run" in capsys.readouterr().err


def test_a_run_name_that_is_a_link_out_of_the_runs_folder_is_refused(tmp_path, capsys):
    runs, outside = tmp_path / "runs", tmp_path / "outside"
    runs.mkdir()
    outside.mkdir()
    (runs / "r").symlink_to(outside)
    assert main(["run", "--name", "r", "--runs-dir", str(runs), "--preset", "smoke"]) == 2
    assert "leads outside" in capsys.readouterr().err and list(outside.iterdir()) == []
