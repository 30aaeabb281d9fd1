"""Query deduplication and self-instruct requests."""

import random

import pytest

from sltk.lengthen import keep_fraction, select_by_length
from sltk.queries import Deduper, candidate_requests, normalize


def test_exact_duplicates_ignore_case_punctuation_and_spacing():
    d = Deduper(0.6)
    d.add("Write an essay about the history of tea.")
    assert normalize("Write an ESSAY about the history of tea!") == normalize("write an essay  about the history of tea")  # noqa: E501
    assert d.is_duplicate("write an essay, about the History of Tea")


def test_near_duplicates_by_trigram_overlap():
    d = Deduper(0.6)
    d.add("Write a detailed essay about the history of tea in China and its spread to Europe.")
    assert d.is_duplicate("Write a detailed essay about the history of tea in China and its spread to Japan.")
    assert not d.is_duplicate("Compose a travel guide to the mountain villages of northern Portugal.")


def test_chinese_near_duplicates_use_characters():
    d = Deduper(0.6)
    d.add("写一篇关于中国茶文化历史的文章，介绍它如何传到欧洲。")
    assert d.is_duplicate("写一篇关于中国茶文化历史的文章，介绍它如何传到日本。")
    assert not d.is_duplicate("为一家新开的咖啡馆写一份详细的商业计划书。")


def test_threshold_controls_near_duplicates():
    a = "Write a story about a lighthouse keeper who finds a bottle on the beach."
    b = "Write a story about a lighthouse keeper who finds a letter in the sand."
    strict, loose = Deduper(0.9), Deduper(0.3)
    strict.add(a)
    loose.add(a)
    assert not strict.is_duplicate(b)
    assert loose.is_duplicate(b)


def test_candidate_requests_show_two_distinct_seeds_and_prefill_the_third_slot():
    pool = [f"Seed instruction number {i}." for i in range(10)]
    reqs = candidate_requests(pool, [1, 2, 3, 4, 5], "en", 2)
    assert len(reqs) == 5 and [r.seed for r in reqs] == [1, 2, 3, 4, 5]
    assert candidate_requests(pool, [3], "en", 2)[0].prefill == reqs[2].prefill
    for r in reqs:
        shown = [s for s in pool if s in r.prefill]
        assert len(shown) == 2
        assert r.prefill.endswith("Instruction 3:") and r.role is None


def test_keep_fraction_floors():
    body = "\n\n".join(f"P{i}." for i in range(6))
    assert keep_fraction(body, 2 / 3) == "\n\n".join(f"P{i}." for i in range(4))
    assert keep_fraction("P0.\n\nP1.\n\nP2.", 2 / 3) == "P0.\n\nP1."
    assert keep_fraction("one line only.", 2 / 3) == ""


def test_length_selection_is_by_words_and_order_free():
    recs = [{"id": f"r{i:03d}", "words": i * 10} for i in range(200)]
    a = select_by_length(recs, random.Random(3))
    b = select_by_length(list(reversed(recs)), random.Random(3))
    assert [r["id"] for r in a] == [r["id"] for r in b]
    kept_words = sorted(r["words"] for r in a)
    assert min(kept_words) >= 0.2 * 1990  # the shortest ~21% are always dropped
    assert 0.45 < len(a) / len(recs) < 0.75


def test_forced_choice_judge_answers_every_query_and_matches_the_scores(tiny):
    from sltk.backends import HFBackend
    from sltk.queries import JUDGE_OPTIONS, suitable

    backend = HFBackend(tiny, batch_size=4, progress=False)
    qs = ["Write a 3000-word history of the bicycle.", "What is 2+2?", "Tell a long saga of two families."]
    verdicts = suitable(backend, qs, "en", mode="choice")
    assert all(v in (True, False) for v in verdicts)  # a forced choice is never unclear
    from sltk import prompts
    from sltk.chat import ChatRequest

    scores = backend.choice_logprobs([ChatRequest(prompts.judge_messages(q, "en")) for q in qs], JUDGE_OPTIONS["en"])
    assert verdicts == [s["yes"] > s["no"] for s in scores]
    with pytest.raises(ValueError, match="judge_mode"):
        suitable(backend, qs, "en", mode="vote")
