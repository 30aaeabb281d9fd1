"""A whole smoke run of two iterations whose every generation goes to a real `transformers serve` on loopback.

Training stays in the test's process; iteration 2's requests go to the adapters iteration 1 trained, which
the server loads by path (`serve.adapters: path`). On the way the run meets a server that is not there and
a server without vLLM's runtime LoRA API, and resumes after each. Its records are compared with the
in-process smoke run's for ids and counts.
"""

import json
import re

import pytest
from servers import Server, free_port

from sltk import records
from sltk.cli import main

# The smoke preset, smaller where a served request costs more than an in-process batch; without the judge, whose
# sampled verdicts (the fallback on a server without logprobs: test_served.py) the 135M model rarely makes clear.
SMALLER = ["queries.per_iteration=2", "queries.max_tries=2", "queries.judge=false", "eval.prompts=1",
           "serve.retries=0", "serve.concurrency=2",
           # transformers serve samples only when the request's generation config says so
           "serve.extra_body={generation_config: '{\"do_sample\": true}'}"]


def ids(folder, name):
    return [r["id"] for r in records.read_jsonl(folder / name)] if (folder / name).exists() else []


def check_ids_and_counts(run, k: int, per_query: int, attempts: int):
    """What the in-process loop guarantees of iteration k's records, whatever the texts."""
    it = run / f"iter_{k}"
    queries = ids(it, "queries.jsonl")
    assert queries == [f"i{k}-en-q{n:05d}" for n in range(len(queries))] and queries
    assert ids(it, "drafts.jsonl") and sorted(ids(it, "drafts.jsonl")) == sorted(
        f"{q}-d{j}" for q in queries for j in range(per_query))
    kept = [r["id"] for r in records.read_jsonl(it / "drafts.jsonl") if r["ok"]]
    assert sorted(ids(it, "extended.jsonl")) == sorted(f"{d}-e{a}" for d in kept for a in range(attempts))
    ok = {r["id"] for r in records.read_jsonl(it / "extended.jsonl") if r["ok"]}
    for role in ("generator", "extender"):
        assert set(ids(it, f"sft_{role}.jsonl")) == ok
        assert (it / "adapters" / role / "adapter_config.json").exists()
    return {p.name for p in it.iterdir()}


@pytest.mark.integration
def test_a_smoke_run_on_a_server_has_the_in_process_runs_ids_and_counts(smoke_run, tmp_path, capsys):
    runs = tmp_path / "runs"
    start = ["run", "--preset", "smoke", "--name", "srv", "--runs-dir", str(runs)]
    for item in SMALLER:
        start += ["--set", item]
    resume = ["run", "--name", "srv", "--runs-dir", str(runs)]

    dead = f"http://127.0.0.1:{free_port()}/v1"
    assert main(start + ["--base-url", dead]) == 2
    assert f"{dead}/completions failed after 1 attempt" in capsys.readouterr().err

    # (not --continuous-batching: its batch processor breaks when requests for several models interleave)
    server = Server(None, tmp_path / "serve.log", threads=2)
    try:
        # transformers serve has no runtime LoRA API: after iteration 1's training the run stops, saying what to load
        assert main(resume + ["--base-url", server.url]) == 2
        said = capsys.readouterr().err
        for role in ("generator", "extender"):
            assert f"srv-{role}-iter1 = {(runs / 'srv' / 'iter_1' / 'adapters' / role).resolve()}" in said
        steps = json.loads((runs / "srv" / "manifest.json").read_text())["steps"]
        assert "iter_1/train_extender" in steps and "iter_2/drafts" not in steps

        # it loads a model by its path: each adapter goes as a folder of the base's files and the adapter
        assert main(resume + ["--base-url", server.url, "--adapters", "path"]) == 0
        log = server.log.read_text()
    finally:
        server.stop()
    run = runs / "srv"
    served = run / "served"
    # the folders the server loaded a model from ("Model: X" before transformers 5.25, "Loading X" since)
    loaded = set(re.findall(r"(?:Model: |Loading )(\S+)", log))
    for name in ("generator-iter1", "extender-iter1", "generator-iter2", "control"):
        assert str((served / name).resolve()) in loaded, name  # iteration 2's requests and the control arm

    files = check_ids_and_counts(run, 1, per_query=1, attempts=1)
    assert check_ids_and_counts(run, 2, per_query=1, attempts=1) == files
    assert check_ids_and_counts(smoke_run, 1, per_query=1, attempts=1) == files  # the in-process run's files

    reference = set(json.loads((smoke_run / "manifest.json").read_text())["steps"])
    expected = reference | {k.replace("iter_1/", "iter_2/") for k in reference if k.startswith("iter_1/")}
    assert set(json.loads((run / "manifest.json").read_text())["steps"]) == expected
    assert json.loads((run / "iter_2" / "stats.json").read_text()).keys() == json.loads(
        (smoke_run / "iter_1" / "stats.json").read_text()).keys()
    answers = {p.stem: ids(run / "eval", p.name) for p in (run / "eval").glob("*.jsonl")}
    assert sorted(answers) == ["base", "control", "generator_iter_1", "generator_iter_2"]
    assert all(a == ids(smoke_run / "eval", "base.jsonl") for a in answers.values())
    assert ids(run / "final", "dataset.jsonl") and ids(run / "final", "harvest.jsonl")
