import json
import random
import re
from collections import Counter

import pytest

from sltk.constraints import LONGEN_TYPES
from sltk.prompts import extension_prompt
from sltk.records import write_jsonl
from sltk.sft import (
    CONSTRAINT_SHARES,
    constrained_query,
    extender_record,
    final_records,
    generator_record,
    make_constraint,
    save_hf_dataset,
    to_alpaca,
    to_hf_dataset,
)
from sltk.text import count_words, drop_lines

# How each constraint type reads in each language; the groups are the numbers.
PATTERNS = {
    "en": {
        "about": r"around (\d+) words",
        "range": r"between (\d+) and (\d+) words",
        "above": r"more than (\d+) words",
        "below": r"less than (\d+) words",
    },
    "zh": {
        "about": r"(\d+)字左右",
        "range": r"(\d+)到(\d+)字",
        "above": r"(\d+)字以上",
        "below": r"(\d+)字以内",
    },
}


def numbers_of(c: dict, lang: str) -> list[int]:
    m = re.fullmatch(PATTERNS[lang][c["type"]], c["constraint"])
    assert m, f"{c['constraint']!r} does not read as a {lang} {c['type']} constraint"
    return [int(g) for g in m.groups()]


def longen_bounds(kind: str, nums: list[int]) -> tuple[float, float]:
    """The LonGen table, written out independently of the module."""
    if kind == "about":
        return 0.8 * nums[0], 1.2 * nums[0]
    if kind == "range":
        return nums[0], nums[1]
    if kind == "above":
        return nums[0], 1.5 * nums[0]
    return 0.5 * nums[0], nums[0]


def check_constraint(c: dict, words: int, lang: str) -> list[int]:
    nums = numbers_of(c, lang)
    assert all(n > 0 for n in nums)
    low, high = longen_bounds(c["type"], nums)
    assert c["low"] == pytest.approx(low) and c["high"] == pytest.approx(high)
    assert c["low"] <= words <= c["high"], (words, c)
    if c["type"] == "range":
        assert nums[0] < nums[1]
    return nums


def text_of(words: int, lang: str = "en") -> str:
    return ("字" * words) if lang == "zh" else " ".join(["word"] * (words - 1) + ["end."])


# --------------------------------------------------------------------------- role records


def test_generator_record():
    rec = generator_record("Write a saga.", "Long saga.", id="q1", iteration=2)
    assert rec == {
        "messages": [
            {"role": "user", "content": "Write a saga."},
            {"role": "assistant", "content": "Long saga."},
        ],
        "id": "q1",
        "iteration": 2,
    }


DRAFT = "\n".join(f"Line number {i} of the draft." for i in range(40))


def test_extender_record_uses_extension_prompt_of_line_dropped_draft():
    rec = extender_record("Write a saga.", DRAFT, "Extended saga.", "en", random.Random(7), id="q1")
    dropped = drop_lines(DRAFT, 0.8, random.Random(7))
    assert dropped != DRAFT
    assert rec["messages"] == [
        {"role": "user", "content": extension_prompt("Write a saga.", dropped, "en")},
        {"role": "assistant", "content": "Extended saga."},
    ]
    assert rec["id"] == "q1"


def test_extender_record_drops_about_a_fifth_of_lines():
    user = extender_record("q", DRAFT, "x", "en", random.Random(1))["messages"][0]["content"]
    kept = user.count("Line number")
    assert 20 <= kept < 40


def test_extender_record_keep_prob_one_keeps_draft_and_language():
    rec = extender_record("写一篇故事。", DRAFT, "扩写后。", "zh", random.Random(3), keep_prob=1.0)
    assert rec["messages"][0]["content"] == extension_prompt("写一篇故事。", DRAFT, "zh")


# --------------------------------------------------------------------------- constraints


def test_type_shares():
    rng = random.Random(0)
    n = 20000
    counts = Counter(make_constraint(3456, "en", rng)["type"] for _ in range(n))
    assert set(counts) == set(LONGEN_TYPES)
    assert CONSTRAINT_SHARES == {"about": 0.40, "range": 0.25, "above": 0.10, "below": 0.25}
    for kind, share in CONSTRAINT_SHARES.items():
        assert abs(counts[kind] / n - share) < 0.015, (kind, counts[kind] / n)


def test_about_rounds_to_2000_a_fifth_of_the_time():
    rng = random.Random(1)
    texts = Counter(make_constraint(5100, "en", rng, kind="about")["constraint"] for _ in range(5000))
    assert set(texts) == {"around 5000 words", "around 6000 words"}
    assert abs(texts["around 6000 words"] / 5000 - 0.2) < 0.025


@pytest.mark.parametrize(
    "words, kind, en, zh",
    [
        (3456, "range", "between 3000 and 4000 words", "3000到4000字"),
        (3456, "above", "more than 3000 words", "3000字以上"),
        (3456, "below", "less than 4000 words", "4000字以内"),
        (2900, "about", "around 3000 words", "3000字左右"),
        (3000, "range", "between 3000 and 4000 words", "3000到4000字"),
        (1600, "above", "more than 1500 words", "1500字以上"),
        (999, "above", "more than 900 words", "900字以上"),
        (150, "range", "between 100 and 200 words", "100到200字"),
        (150, "below", "less than 200 words", "200字以内"),
        (150, "about", "around 150 words", "150字左右"),
        (40, "range", "between 40 and 50 words", "40到50字"),
    ],
)
def test_constraint_wording_and_rounding(words, kind, en, zh):
    assert make_constraint(words, "en", random.Random(0), kind=kind)["constraint"] == en
    assert make_constraint(words, "zh", random.Random(0), kind=kind)["constraint"] == zh


def test_about_falls_back_from_a_failing_2000_rounding():
    # 2,900 rounds to 2,000 at step 2,000, which 0.8-1.2 rejects; the 1,000 step gives 3,000.
    seen = {make_constraint(2900, "en", random.Random(s), kind="about")["constraint"] for s in range(200)}
    assert seen == {"around 3000 words"}


def test_chinese_above_and_below_are_not_swapped():
    rng = random.Random(5)
    for words in range(300, 9000, 71):
        above = make_constraint(words, "zh", rng, kind="above")
        below = make_constraint(words, "zh", rng, kind="below")
        assert "以上" in above["constraint"] and "以内" not in above["constraint"]
        assert "以内" in below["constraint"] and "以上" not in below["constraint"]
        (n_above,) = numbers_of(above, "zh")
        (n_below,) = numbers_of(below, "zh")
        assert n_above <= words <= n_below
        assert above["low"] == n_above and below["high"] == n_below


def test_every_constraint_is_satisfied_under_longen():
    rng = random.Random(2024)
    draws = Counter()
    for words in range(150, 9000, 37):
        for lang in ("en", "zh"):
            for _ in range(5):
                c = make_constraint(words, lang, rng)
                check_constraint(c, words, lang)
                draws[c["type"]] += 1
    assert sum(draws.values()) >= 2000 and set(draws) == set(LONGEN_TYPES)


@pytest.mark.parametrize("kind", LONGEN_TYPES)
def test_small_counts_never_give_zero(kind):
    rng = random.Random(9)
    for words in range(1, 400):
        for lang in ("en", "zh"):
            check_constraint(make_constraint(words, lang, rng, kind=kind), words, lang)


def test_constraint_rejects_bad_input():
    rng = random.Random(0)
    with pytest.raises(ValueError, match="words"):
        make_constraint(0, "en", rng)
    with pytest.raises(ValueError, match="en, zh"):
        make_constraint(100, "de", rng)
    with pytest.raises(ValueError, match="about"):
        make_constraint(100, "en", rng, kind="exactly")


# --------------------------------------------------------------------------- constrained query


def test_constrained_query_english():
    c = make_constraint(3000, "en", random.Random(0), kind="about")
    assert constrained_query("Write about tides", c, "en") == "Write about tides. Write around 3000 words."
    assert constrained_query("Write about tides?", "more than 2000 words", "en").startswith(
        "Write about tides? "
    )


def test_constrained_query_chinese():
    assert constrained_query("写一篇关于潮汐的文章。", "3000字左右", "zh") == "写一篇关于潮汐的文章。字数要求：3000字左右。"  # noqa: E501
    assert constrained_query("写一篇关于潮汐的文章", "2000字以上", "zh") == "写一篇关于潮汐的文章。字数要求：2000字以上。"  # noqa: E501


def test_constrained_query_wording_varies_with_rng():
    rng = random.Random(0)
    for lang, text in (("en", "between 2000 and 3000 words"), ("zh", "2000到3000字")):
        outs = {constrained_query("Q.", text, lang, rng) for _ in range(100)}
        assert len(outs) >= 3
        assert all(o.startswith("Q.") and text in o for o in outs)


# --------------------------------------------------------------------------- final dataset


def pool_item(i, words, lang="en", query=None, **extra):
    return {"id": f"q{i}", "query": query or f"Query {i}.", "text": text_of(words, lang), "lang": lang, **extra}


def test_final_records_window_and_format():
    pool = [pool_item(i, w) for i, w in enumerate([1999, 2000, 5000, 8000, 8001])]
    pool.append(pool_item(9, 4000, "zh", query="写一篇文章。"))
    records = final_records(pool, rng=random.Random(0))
    assert [r["id"] for r in records] == ["q1", "q2", "q3", "q9"]
    for r, item in zip(records, [pool[1], pool[2], pool[3], pool[5]]):
        assert set(r) == {"messages", "id", "lang", "words", "constraint"}
        user, assistant = r["messages"]
        assert user["role"] == "user" and assistant == {"role": "assistant", "content": item["text"]}
        assert user["content"].startswith(item["query"])
        assert r["constraint"]["constraint"] in user["content"]
        assert r["words"] == count_words(item["text"]) and r["lang"] == item["lang"]
        check_constraint(r["constraint"], r["words"], r["lang"])


def test_final_records_configurable_window():
    pool = [pool_item(i, w) for i, w in enumerate([150, 200, 900, 1500, 1501])]
    records = final_records(pool, min_words=200, max_words=1500, rng=random.Random(0))
    assert [r["words"] for r in records] == [200, 900, 1500]
    with pytest.raises(ValueError):
        final_records(pool, min_words=3000, max_words=2000)


def test_final_records_deduplicates_query_text_pairs():
    a = pool_item(1, 3000, query="Same query.")
    b = dict(a, id="q2")  # same query and text: a duplicate
    c = pool_item(3, 3000, query="Other query.")  # same text, other query: kept
    records = final_records([a, b, c], rng=random.Random(0))
    assert [r["id"] for r in records] == ["q1", "q3"]


def test_final_records_detects_missing_language():
    item = pool_item(1, 2500, "zh", query="写作。")
    del item["lang"]
    (record,) = final_records([item], rng=random.Random(0))
    assert record["lang"] == "zh" and "字" in record["constraint"]["constraint"]


def test_final_records_reproducible_with_seed():
    pool = [pool_item(i, 2000 + 123 * i) for i in range(30)]
    assert final_records(pool, rng=random.Random(4)) == final_records(pool, rng=random.Random(4))


# --------------------------------------------------------------------------- export


@pytest.fixture()
def records():
    pool = [pool_item(1, 2500), pool_item(2, 3100, "zh", query="写一篇关于长江的文章。")]
    return final_records(pool, rng=random.Random(0))


def test_jsonl_round_trip(records, tmp_path):
    path = tmp_path / "out" / "dataset.jsonl"
    write_jsonl(path, records)
    raw = path.read_text(encoding="utf-8")
    lines = raw.splitlines()
    assert len(lines) == len(records)
    assert "长江" in raw and "\\u" not in raw
    assert [json.loads(line) for line in lines] == records
    write_jsonl(path, records[:1])  # overwrites
    assert len(path.read_text(encoding="utf-8").splitlines()) == 1


def test_hf_dataset(records, tmp_path):
    from datasets import load_from_disk

    ds = to_hf_dataset(records)
    assert "messages" in ds.column_names and len(ds) == 2
    assert ds[1]["messages"] == records[1]["messages"]
    save_hf_dataset(records, tmp_path / "hf")
    loaded = load_from_disk(str(tmp_path / "hf"))
    assert loaded[0]["messages"] == records[0]["messages"]
    assert loaded[1]["constraint"] == records[1]["constraint"]


def test_alpaca(records):
    rows = to_alpaca(records + [generator_record("Q", "A")])
    assert rows[-1] == {"instruction": "Q", "input": "", "output": "A"}
    assert rows[0]["instruction"] == records[0]["messages"][0]["content"]
    assert rows[0]["output"] == records[0]["messages"][1]["content"]
    with pytest.raises(ValueError, match="assistant"):
        to_alpaca([{"messages": [{"role": "user", "content": "Q"}]}])
