"""Held-out growth with intervals: the bootstrap, the table, and the control arm."""

import random
import statistics

import pytest

from sltk import heldout, records


def outputs(words: list[int], finish="stop"):
    body = lambda n: " ".join("w" + chr(97 + i // 676) + chr(97 + i // 26 % 26) + chr(97 + i % 26)
                              for i in range(n)) + "."  # n distinct words
    return [{"text": body(n), "tokens": n, "finish": finish} for n in words]


def test_bootstrap_ratio_of_identical_samples_is_exactly_one():
    base = [100, 200, 300, 400]
    assert heldout.bootstrap_ratio(base, base) == (1.0, 1.0, 1.0)


def test_bootstrap_interval_covers_the_true_ratio_and_narrows_with_more_prompts():
    rng = random.Random(1)
    widths = []
    for n in (16, 64):
        base = [rng.randint(200, 800) for _ in range(n)]
        other = [2 * b + rng.randint(-150, 150) for b in base]
        point, lo, hi = heldout.bootstrap_ratio(base, other)
        assert lo < point < hi and lo < 2.0 < hi
        widths.append(hi - lo)
    assert widths[1] < widths[0]
    assert heldout.bootstrap_ratio([1, 2, 3], [2, 4, 6], statistics.median)[0] == 2.0


def test_paired_samples_are_required():
    with pytest.raises(ValueError, match="paired"):
        heldout.bootstrap_ratio([1, 2], [1])


def test_table_rows_ratios_and_shares():
    base = outputs([100, 200, 300, 400])
    longer = outputs([250, 350, 600, 900])
    capped = outputs([10, 20, 30, 40], finish="length")
    table = heldout.table({"base": base, "control": outputs([100, 200, 300, 400]), "g": longer, "c": capped},
                          cap=1000)
    rows = table.set_index("model")
    assert rows.loc["control", "mean_x"] == 1.0 and rows.loc["control", "mean_x_lo"] <= 1.0 <= rows.loc["control",
                                                                                                       "mean_x_hi"]
    assert rows.loc["g", "mean_x"] == round(2100 / 1000, 2) and rows.loc["g", "median_x"] == round(475 / 250, 2)
    assert rows.loc["g", "mean_x_lo"] > 1.0
    assert rows.loc["c", "cap_hit"] == 1.0 and rows.loc["c", "ending_fail"] == 0.0
    assert rows.loc["g", "rep10"] == 0.0
    looping = [{"text": ("one two three four five six seven eight nine ten " * 3).strip() + ".", "tokens": 30,
                "finish": "stop"}]
    r = heldout.row("loop", looping, 100)
    # 10 of the 21 10-grams repeat (the last one ends in "ten.")
    assert r["repetition_fail"] == 1.0 and r["rep10"] == round(10 / 21, 4)


def test_the_table_needs_the_base():
    with pytest.raises(ValueError, match="base"):
        heldout.table({"g": outputs([1])}, cap=10)


class Recorder:
    """Answers in reverse order, as a continuous batch finishes its requests out of order; with `fail_after`,
    dies after that many answers, as a killed run would."""

    def __init__(self, fail_after: int | None = None):
        self.batches, self.fail_after = [], fail_after

    def generate(self, reqs, sampling, desc="", on_result=None):
        from sltk.chat import Completion

        self.batches.append([(r.role, r.id, r.seed) for r in reqs])
        outs = [Completion(f"{r.role} {r.id}.", 2, "stop", 1, r.id) for r in reqs]
        for n, i in enumerate(reversed(range(len(reqs)))):
            if n == self.fail_after:
                raise KeyboardInterrupt
            on_result(i, outs[i])
        return outs


def test_one_call_for_every_model_each_answer_saved_as_it_finishes(tmp_path):
    items = [{"id": f"e{i}", "query": f"Q{i}"} for i in range(5)]
    roles = {"base": None, "control": "control", "g": "g"}
    files = {m: tmp_path / f"{m}.jsonl" for m in roles}
    dying = Recorder(fail_after=4)
    with pytest.raises(KeyboardInterrupt):
        heldout.answer(dying, roles, items, files, None, 0, "eval", "eval")
    assert len(dying.batches) == 1 and len(dying.batches[0]) == 15
    by_prompt = {}
    for role, pid, seed in dying.batches[0]:
        by_prompt.setdefault(pid, set()).add((role, seed))
    for pairs in by_prompt.values():  # all three models, one seed
        assert {r for r, _ in pairs} == {None, "control", "g"} and len({s for _, s in pairs}) == 1
    assert sum(records.count(p) for p in files.values()) == 4  # the answers that finished are kept
    again = Recorder()
    out = heldout.answer(again, roles, items, files, None, 0, "eval", "eval")
    assert len(again.batches) == 1 and len(again.batches[0]) == 11  # only the rest is asked for
    assert [r["id"] for r in out["g"]] == [i["id"] for i in items]
    assert all(r["text"] == f"{role} {r['id']}." for m, role in roles.items() for r in out[m])
    last = Recorder()
    heldout.answer(last, roles, items, files, None, 0, "eval", "eval")
    assert last.batches == []  # resumed: nothing left to answer


def test_data_both_ways_counts_kept_texts_and_their_speed(tmp_path):
    from sltk import analysis

    (tmp_path / "iter_1").mkdir()
    (tmp_path / "agentwrite").mkdir()
    ext = {"query_id": "q", "query": "Write.", "lang": "en", "text": "x", "draft_id": "d", "draft": "x",
           "growth": 2.0, "rounds": []}
    records.write_jsonl(tmp_path / "iter_1" / "extended.jsonl",
                        [{**ext, "id": "a", "ok": True, "words": 600}, {**ext, "id": "b", "ok": False, "words": 900}])
    records.write_jsonl(tmp_path / "agentwrite" / "texts.jsonl",
                        [{"id": "a", "query": "Write.", "ok": True, "words": 1200, "text": "x"},
                         {"id": "b", "query": "Write.", "ok": True, "words": 800, "text": "y"}])
    records.write_json(tmp_path / "manifest.json", {"steps": {"iter_1/drafts": {"seconds": 100.0},
                                                              "iter_1/extended": {"seconds": 200.0},
                                                              "agentwrite/data": {"seconds": 400.0}}})
    table, kept = analysis.data_both_ways(tmp_path, iterations=2)  # iteration 2 not there yet: counted as none
    sl, aw = table.set_index("method").loc["Self-Lengthen"], table.set_index("method").loc["AgentWrite"]
    assert (sl["texts kept"], sl["tried"], sl["pass rate"], sl["mean words"]) == (1, 2, 0.5, 600.0)
    assert sl["kept words / s"] == 2.0 and aw["kept words / s"] == 5.0 and aw["mean words"] == 1000.0
    assert [r["id"] for r in kept["AgentWrite"]] == ["a", "b"]
