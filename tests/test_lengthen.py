"""The two-stage extension on a scripted backend: what each stage is given and what is accepted."""

from sltk.chat import Completion, Sampling
from sltk.config import ExtendConfig
from sltk.lengthen import extension_round

WORDS = "amber birch cedar delta ember fjord grove heron inlet juniper kelp lantern meadow north oak".split()


def _para(label: str, i: int) -> str:
    """A sentence that shares no five-word run with the others."""
    w = WORDS[i % len(WORDS)]
    return f"{label} {i} {w} tells of the {w} harbour, {w} boats and {w} gulls at {w} dawn."


DRAFT = "\n\n".join(_para("Paragraph", i) for i in range(1, 5))


class Scripted:
    """Answers each generate call with the next scripted texts, remembering the requests."""

    def __init__(self, *calls):
        self.calls, self.requests = list(calls), []

    def generate(self, requests, sampling=None, seed=0, desc=""):
        self.requests.append(requests)
        texts = self.calls.pop(0)
        return [Completion(t, len(t.split()), "stop", 10, r.id) for t, r in zip(texts, requests)]


def _item():
    return {"id": "d0-e0", "query": "Write about a harbour.", "lang": "en", "text": DRAFT, "seed": 7}


def test_stage_two_continues_the_kept_part_and_a_longer_clean_candidate_is_accepted():
    stage1 = "\n\n".join(_para("Expanded part", i) for i in range(5, 8))
    stage2 = "\n\n".join(_para("Later part", i) for i in range(8, 12))
    backend = Scripted([stage1], [stage2])
    cfg = ExtendConfig(micro_rounds=1, stage_cap=2.0)
    out = extension_round(backend, [_item()], "extender", cfg, Sampling(max_new_tokens=1000), trace=True)[0]
    first, second = backend.requests
    assert "Paragraph 2" in first[0].messages[0]["content"] and "Paragraph 3" not in first[0].messages[0]["content"]
    assert second[0].prefill.startswith("Expanded part 5") and "Expanded part 7" not in second[0].prefill
    assert "Paragraph 4" in second[0].messages[0]["content"]  # stage 2 sees the whole text
    assert first[0].max_new_tokens < second[0].max_new_tokens <= 1000  # capped by the size of each input
    r = out["rounds"][0]
    assert r["accepted"] and out["ok"] and out["growth"] > 1.2
    assert r["candidate"] == out["text"] and r["kept"] in out["text"] and out["text"].endswith("lantern dawn.")


def test_a_candidate_failing_a_filter_is_not_accepted_and_closing_commentary_is_dropped():
    stage1 = "\n\n".join(_para("Expanded part", i) for i in range(5, 8))
    looping = "The boats come home. " * 30
    closing = "I hope this expanded version helps you with your story about the harbour."
    tail = "\n\n".join(_para("Later part", i) for i in range(8, 12))
    backend = Scripted([stage1, stage1], [looping, tail + "\n\n" + closing])
    cfg = ExtendConfig(micro_rounds=1)
    outs = extension_round(backend, [_item(), {**_item(), "id": "d0-e1"}], None, cfg, Sampling(), trace=True)
    assert outs[0]["rounds"][0]["failed"] == ["repetition"] and not outs[0]["ok"]
    assert outs[0]["text"] == DRAFT  # nothing accepted: the draft stays
    assert outs[1]["ok"] and "I hope" not in outs[1]["text"]


def test_stage_two_floor_asks_for_the_words_the_candidate_still_lacks():
    stage1 = "\n\n".join(_para("Expanded part", i) for i in range(5, 8))
    stage2 = "\n\n".join(_para("Later part", i) for i in range(8, 12))
    floors = {}
    for growth in (None, 1.5):
        backend = Scripted([stage1], [stage2])
        extension_round(backend, [_item()], None, ExtendConfig(micro_rounds=1, stage2_min_growth=growth), Sampling())
        second = backend.requests[1][0]
        floors[growth] = second.min_new_tokens
    missing = 1.5 * len(DRAFT.split()) - len(second.prefill.split())
    assert floors == {None: 0, 1.5: int(1.3 * missing)} and missing > 0


def test_salvage_cuts_a_looping_candidate_back_to_its_clean_start():
    stage1 = "\n\n".join(_para("Expanded part", i) for i in range(5, 8))
    fresh = "\n\n".join(_para("Later part", i) for i in range(8, 12))
    looping = fresh + "\n\n" + "The boats come home at dawn again. " * 12 + "\n\nAnd they"
    outs = {}
    for salvage in (False, True):
        backend = Scripted([stage1], [looping])
        cfg = ExtendConfig(micro_rounds=1, salvage=salvage)
        outs[salvage] = extension_round(backend, [_item()], None, cfg, Sampling(), trace=True)[0]
    assert not outs[False]["ok"] and outs[False]["text"] == DRAFT
    r = outs[True]["rounds"][0]
    assert r["failed"] == ["ending", "repetition"] and r["accepted"] and outs[True]["ok"]
    assert outs[True]["text"].endswith("lantern dawn.") and "boats come home" not in outs[True]["text"]
    assert r["salvaged_words"] == outs[True]["words"] < r["candidate_words"] and r["salvaged"] == outs[True]["text"]


def test_salvage_rejects_what_is_no_longer_than_the_draft_once_cut():
    stage1 = _para("Expanded part", 5)
    looping = "The boats come home at dawn again. " * 12
    backend = Scripted([stage1], [looping])
    out = extension_round(backend, [_item()], None, ExtendConfig(micro_rounds=1, salvage=True), Sampling())[0]
    assert not out["rounds"][0]["accepted"] and out["text"] == DRAFT
