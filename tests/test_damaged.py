"""Damaged records in a run folder: named with file, line and fix; set aside by `sltk repair`; the step
that wrote them writes them again; a finished step whose file went missing or short is not trusted."""

import json

import pytest

from sltk import records
from sltk.cli import main
from sltk.config import preset
from sltk.pipeline import Pipeline


def _draft(i: int, **change) -> dict:
    return {"id": f"q{i}-d0", "query_id": f"q{i}", "query": f"Write about {i}.", "lang": "en", "ok": True,
            "text": f"Text {i}.", **change}


@pytest.mark.parametrize("record, wrong", [
    ({k: v for k, v in _draft(1).items() if k != "ok"}, 'the record has no "ok"'),
    (_draft(1, ok="yes"), '"ok" is str, expected bool'),
    (_draft(1, text=None), '"text" is NoneType, expected str'),
    ([1, 2], "expected a JSON object, got list"),
])
def test_a_record_missing_a_field_or_of_the_wrong_type_is_named_with_the_fix(tmp_path, record, wrong):
    run = tmp_path / "runs" / "r"
    Pipeline(preset("smoke"), run).mark("iter_1/drafts")
    path = run / "iter_1" / "drafts.jsonl"
    path.parent.mkdir()
    path.write_text(json.dumps(_draft(0)) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(ValueError) as err:
        records.read_jsonl(path)
    assert str(err.value).startswith(f"{path}:2: {wrong}; fix or remove that line")
    assert f"sltk repair --name r --runs-dir {run.parent.resolve()}" in str(err.value)


def test_repair_sets_damaged_lines_aside_and_keeps_good_ones_byte_for_byte(tmp_path, capsys):
    run = tmp_path / "r"
    Pipeline(preset("smoke"), run).mark("iter_1/drafts")
    good = [json.dumps(_draft(i), ensure_ascii=False) + "\n" for i in range(3)]
    bad = ['{"id": oops}\n', json.dumps({"id": "x"}) + "\n", '{"id": "cut sh']
    path = run / "iter_1" / "drafts.jsonl"
    path.parent.mkdir()
    path.write_text(good[0] + bad[0] + good[1] + bad[1] + good[2] + bad[2])
    answers = run / "eval" / "base.jsonl"
    answers.parent.mkdir()
    answers.write_text('{"id": "a", "text": "t", "words": 1}\n{"id": "b", "text": "t"}\n')
    assert main(["repair", "--name", "r", "--runs-dir", str(tmp_path)]) == 0
    assert path.read_text() == "".join(good)
    assert (run / "iter_1" / "drafts.jsonl.damaged").read_text() == "".join(bad) + "\n"
    assert answers.read_text() == '{"id": "a", "text": "t", "words": 1}\n'
    out = capsys.readouterr().out
    assert "4 damaged line(s) in 2 file(s)" in out and "drafts.jsonl: 3 damaged line(s)" in out
    assert main(["repair", "--name", "r", "--runs-dir", str(tmp_path)]) == 0
    assert "Nothing to repair" in capsys.readouterr().out
    assert main(["repair", "--name", "nothing-here", "--runs-dir", str(tmp_path)]) == 2


def test_a_finished_step_whose_file_is_short_or_gone_writes_the_missing_records_again(tmp_path, tokenizer, caplog):
    from conftest import tiny_model

    config = preset("smoke", **{"drafts.max_new_tokens": 4, "drafts.per_query": 2, "filters": ["ending"]})
    p = Pipeline(config, tmp_path / "r", loaded=tiny_model(tokenizer), progress=False)
    folder = tmp_path / "r" / "iter_1"
    folder.mkdir()
    records.append_jsonl(folder / "queries.jsonl",
                         [{"id": f"q{i}", "query": f"Write about topic {i}.", "lang": "en"} for i in range(3)])
    p.drafts(1)
    path = folder / "drafts.jsonl"
    first = records.read_jsonl(path)
    assert p.manifest["steps"]["iter_1/drafts"]["outputs"] == {"iter_1/drafts.jsonl": 6}
    lines = path.read_text().splitlines(keepends=True)

    path.write_text("".join(lines[:2] + lines[3:]))  # a line removed, as the error message offers
    p.drafts(1)
    assert "step iter_1/drafts was finished, but iter_1/drafts.jsonl has 5 of its 6 records" in caplog.text
    again = records.read_jsonl(path)
    assert path.read_text().startswith("".join(lines[:2] + lines[3:]))  # the good lines are untouched
    assert sorted(r["id"] for r in again) == sorted(r["id"] for r in first)
    assert {r["id"]: r["tries"] for r in again} == {r["id"]: r["tries"] for r in first}

    for damage in ("empty", "gone"):
        path.write_text("") if damage == "empty" else path.unlink()
        p.drafts(1)
        assert sorted(r["id"] for r in records.read_jsonl(path)) == sorted(r["id"] for r in first)
    assert "iter_1/drafts.jsonl is gone" in caplog.text
    assert p.manifest["steps"]["iter_1/drafts"]["outputs"] == {"iter_1/drafts.jsonl": 6}

    caplog.clear()
    p.drafts(1)  # whole again: trusted, nothing redone
    assert not caplog.records


def test_a_step_that_cannot_write_its_records_one_by_one_stops_with_the_way_out(tmp_path):
    p = Pipeline(preset("smoke"), tmp_path / "r")
    path = tmp_path / "r" / "iter_1" / "queries.jsonl"
    rows = [{"id": f"q{i}", "query": f"Write about {i}.", "lang": "en", "round": 0} for i in range(2)]
    records.append_jsonl(path, rows)
    p.run_step("iter_1/queries", lambda: {"records": 2}, (path,))
    records.write_jsonl(path, rows[:1])
    with pytest.raises(RuntimeError, match="iter_1/queries.jsonl has 1 of its 2 records, and its records are not "
                                           "made one by one"):
        p.queries(1)  # the real step: it refuses before making any new query
    assert records.count(path) == 1
    with pytest.raises(RuntimeError, match=r"could not write again what is missing from \['iter_1/queries.jsonl'\]"):
        p.run_step("iter_1/queries", lambda: {"records": 1}, (path,))  # a step that tried and fell short
