"""Run-folder bookkeeping that needs no model: config lock, manifest, torn lines, bad records."""

import json

import pytest

from sltk.config import preset
from sltk.pipeline import Pipeline
from sltk.records import append_jsonl, read_jsonl


def test_a_run_refuses_another_configuration(tmp_path):
    Pipeline(preset("smoke"), tmp_path / "r").mark("iter_1/queries", records=1)
    Pipeline(preset("smoke"), tmp_path / "r")  # the same settings resume
    with pytest.raises(ValueError, match=r"another configuration \(differs in \['train.lr'\]\)"):
        Pipeline(preset("smoke", **{"train.lr": 0.1}), tmp_path / "r")


def test_a_start_that_wrote_nothing_does_not_block_the_run_name(tmp_path):
    Pipeline(preset("smoke", model="no/such-model"), tmp_path / "r")  # the model would fail to load next
    fixed = Pipeline(preset("smoke"), tmp_path / "r")
    assert fixed.config.model == "embedded"
    (tmp_path / "r2").mkdir()
    (tmp_path / "r2" / "config.yaml").write_text("")  # a 0-byte file from a full disk
    assert Pipeline(preset("smoke"), tmp_path / "r2").config == preset("smoke")
    assert "model: embedded" in (tmp_path / "r2" / "config.yaml").read_text()


def test_agentwrite_writes_from_the_queries_every_iteration_made(tmp_path):
    p = Pipeline(preset("smoke", iterations=2), tmp_path / "r")
    assert [r["id"] for r in p.agentwrite_prompts()][:1] == [read_jsonl(p.config.seeds[0])[0]["id"]]  # no run yet
    for k in (1, 2):
        query = {"id": f"q{k}", "query": f"Write about {k}.", "lang": "en"}
        append_jsonl(p.iteration_dir(k) / "queries.jsonl", [query])
    p.mark("iter_1/queries", records=1)
    assert [r["id"] for r in p.agentwrite_prompts()] == ["q1"]  # iteration 2's queries are not finished
    p.mark("iter_2/queries", records=1)
    assert [r["id"] for r in p.agentwrite_prompts()] == ["q1", "q2"]


def test_manifest_is_rewritten_atomically_and_reloaded(tmp_path):
    p = Pipeline(preset("smoke"), tmp_path / "r")
    assert not p.done("iter_1/queries")
    p.mark("iter_1/queries", records=3)
    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["steps"]["iter_1/queries"]["records"] == 3
    assert Pipeline(preset("smoke"), tmp_path / "r").done("iter_1/queries")
    assert not list((tmp_path / "r").glob("*.tmp"))


def test_a_torn_last_line_is_dropped_on_resume(tmp_path, caplog):
    path = tmp_path / "notes.jsonl"
    append_jsonl(path, [{"id": "a"}, {"id": "b"}])
    with open(path, "a") as f:
        f.write('{"id": "c", "text": "cut sho')  # a writer killed mid-line
    assert [r["id"] for r in read_jsonl(path, repair_tail=True)] == ["a", "b"]
    assert path.read_text().endswith("}\n")
    assert [r.message for r in caplog.records] == [
        f"{path}: removed a last line cut short (28 bytes, a write that was killed); its record is written again."]
    read_jsonl(path, repair_tail=True)
    assert len(caplog.records) == 1  # said once
    append_jsonl(path, [{"id": "c"}])
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b", "c"]


def test_a_corrupt_line_in_the_middle_is_named(tmp_path):
    path = tmp_path / "notes.jsonl"
    path.write_text('{"id": "a"}\n{"id": oops}\n{"id": "c"}\n')
    with pytest.raises(ValueError, match=r"notes.jsonl:2: not valid JSON .*fix or remove that line"):
        read_jsonl(path, repair_tail=True)
    assert path.read_text().count("\n") == 3  # nothing was removed
    path.write_text('["not", "an", "object"]\n')
    with pytest.raises(ValueError, match="notes.jsonl:1: expected a JSON object"):
        read_jsonl(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_drafts_have_their_own_token_cap(tmp_path, tokenizer):
    from conftest import tiny_model

    config = preset("smoke", **{"drafts.max_new_tokens": 6, "drafts.per_query": 2, "filters": ["ending"]})
    p = Pipeline(config, tmp_path / "r", loaded=tiny_model(tokenizer), progress=False)
    assert p.draft_sampling.max_new_tokens == 6 and config.sampling.max_new_tokens == 96
    (tmp_path / "r" / "iter_1").mkdir()
    append_jsonl(tmp_path / "r" / "iter_1" / "queries.jsonl",
                 [{"id": f"q{i}", "query": f"Write about topic {i}.", "lang": "en"} for i in range(3)])
    p.drafts(1)
    drafts = read_jsonl(tmp_path / "r" / "iter_1" / "drafts.jsonl")
    assert len(drafts) == 6 and max(d["tokens"] for d in drafts) == 6
    # a random model runs to the cap: those drafts fail the ending check and do not go on
    capped = [d for d in drafts if d["finish"] == "length"]
    assert capped and all(not d["ok"] for d in capped if not d["text"].rstrip().endswith((".", "!", "?")))
    assert Pipeline(preset("smoke"), tmp_path / "s").draft_sampling == preset("smoke").sampling


@pytest.mark.parametrize("lines, named", [
    ([], "no prompts in it"),
    (['{"id": "a", "text": "no query field"}'], ':1: needs a non-empty "query" string'),
    (['{"id": "a", "query": "   "}'], ':1: needs a non-empty "query" string'),
    (['{"id": "a", "query": "Write."}', '{"id": "a", "query": "Other."}'], ":2: id 'a' is already used on line 1"),
    (['{"id": "a", "query": "Write  it."}', '{"id": "b", "query": "write it."}'], ":2: the same query as line 1"),
    (['{"id": "a", "query": "Write.", "lang": "fr"}'], ':1: "lang" \'fr\' is not one of'),
])
def test_a_bad_seeds_file_is_named_before_any_model_loads(tmp_path, lines, named):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(line + "\n" for line in lines))
    with pytest.raises(ValueError) as err:
        Pipeline(preset("smoke", seeds=[str(seeds)]), tmp_path / "r")
    assert str(seeds) in str(err.value) and named in str(err.value)


def test_a_query_that_leaves_its_answer_no_room_is_refused_when_the_model_loads(tmp_path, tokenizer, monkeypatch):
    from conftest import tiny_model

    from sltk import pipeline

    seeds = tmp_path / "seeds.jsonl"
    long_query = "Write about this. " + "word " * 400  # the tiny model's context is 512 tokens
    seeds.write_text(json.dumps({"id": "ok", "query": "Write a poem."}) + "\n"
                     + json.dumps({"id": "long", "query": long_query}) + "\n")
    monkeypatch.setattr(pipeline, "load_base", lambda *a, **k: tiny_model(tokenizer))
    p = Pipeline(preset("smoke", seeds=[str(seeds)]), tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match=r"seeds.jsonl:2: the query is \d+ tokens long, more than half of the "
                                         r"model's context \(512\)"):
        assert p.loaded is None
