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
