"""Scores pinned to hand-computed values, and the constraint parser on the official LonGen file."""

import math
import os
import re
from pathlib import Path

import pytest

from sltk.eval_sets import load_longen
from sltk.scoring import (
    LBW_DIMENSIONS,
    LONGEN_CRITERIA,
    combined_score,
    lbw_quality,
    length_score,
    longbench_write_scores,
    longbench_write_summary,
    longen_quality,
    longen_score,
    longen_scores,
    longen_summary,
    parse_constraint,
    parse_number,
    ruler_scores,
    ruler_summary,
)
from sltk.text import count_words


def words(n: int) -> str:
    return " ".join(["word"] * n)


# --------------------------------------------------------------------------- S_l


@pytest.mark.parametrize("produced, expected", [
    (1000, 100.0), (500, 50.0), (800, 87.5), (1500, 250 / 3), (2000, 200 / 3), (1000 / 3, 0.0), (4000, 0.0),
    (250, 0.0), (5000, 0.0), (0, 0.0), (2500, 50.0),
])
def test_length_score(produced, expected):
    assert length_score(1000, produced) == pytest.approx(expected, abs=1e-9)


def test_length_score_examples_rounded():
    assert round(length_score(300, 450), 2) == 83.33
    assert round(length_score(300, 600), 2) == 66.67
    with pytest.raises(ValueError, match="positive"):
        length_score(0, 10)


def test_longwriter_count():
    # letters-only words count (don't = 2), digits and punctuation do not, each ideograph counts
    assert count_words("Hello, world! don't 123 你好。", "longwriter") == 6


ITEMS = [
    {"id": "a", "length": 100, "lang": "en"},
    {"id": "b", "length": 1000, "lang": "en"},
    {"id": "c", "length": 1000, "lang": "zh"},
    {"id": "d", "length": 5000, "lang": "en"},
]
OUTPUTS = {"a": words(50), "b": words(800), "c": "字" * 2000}


def test_longbench_write_scores():
    table = longbench_write_scores(ITEMS, OUTPUTS)
    assert list(table["words"]) == [50, 800, 2000, 0]
    assert list(table["missing"]) == [False, False, False, True]
    assert list(table["S_l"]) == pytest.approx([50.0, 87.5, 200 / 3, 0.0])


def test_longbench_write_summary_without_judge():
    table = longbench_write_summary(ITEMS, [{"id": k, "text": v} for k, v in OUTPUTS.items()])
    assert list(table.index) == ["overall", "[0,500)", "[500,2000)", "[2000,4000)", "[4000,20000]"]
    assert table.loc["overall", "S_l"] == pytest.approx((50 + 87.5 + 200 / 3 + 0) / 4)
    assert table.loc["[500,2000)", "S_l"] == pytest.approx((87.5 + 200 / 3) / 2)
    assert table.loc["[2000,4000)", "n"] == 0 and math.isnan(table.loc["[2000,4000)", "S_l"])
    assert table.loc["overall", "missing"] == 1
    assert math.isnan(table.loc["overall", "S_q"]) and math.isnan(table.loc["overall", "S"])


def test_longbench_write_summary_with_judge():
    fives = dict.fromkeys(LBW_DIMENSIONS, 5)
    threes = dict.fromkeys(LBW_DIMENSIONS, 3)
    table = longbench_write_summary(ITEMS, OUTPUTS, {"a": fives, "b": threes, "c": fives})
    # item d was never judged: S_q uses a, b, c; [500,2000) holds b (50) and c (100)
    assert table.loc["overall", "n_judged"] == 3
    assert table.loc["overall", "S_q"] == pytest.approx((100 + 50 + 100) / 3)
    assert table.loc["[500,2000)", "S_q"] == pytest.approx(75.0)
    assert table.loc["[0,500)", "S"] == pytest.approx((50 + 100) / 2)
    assert table.loc["overall", "S"] == pytest.approx(combined_score(table.loc["overall", "S_l"], 250 / 3))


def test_outputs_must_match_the_items():
    with pytest.raises(ValueError, match="not in the benchmark"):
        longbench_write_scores(ITEMS, {"zzz": "text"})
    with pytest.raises(ValueError, match="two outputs"):
        longbench_write_scores(ITEMS, [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}])
    with pytest.raises(ValueError, match="'id' and 'text'"):
        longbench_write_scores(ITEMS, [{"id": "a"}])


def test_lbw_quality():
    scores = [dict.fromkeys(LBW_DIMENSIONS, 4), {**dict.fromkeys(LBW_DIMENSIONS, 2), "Relevance": 5}]
    q = lbw_quality(scores)
    assert q["Relevance"] == pytest.approx((4.5 - 1) * 25)  # 87.5
    assert q["Accuracy"] == pytest.approx(50.0)
    assert q["S_q"] == pytest.approx((87.5 + 5 * 50) / 6)
    assert lbw_quality([dict.fromkeys(LBW_DIMENSIONS, 1)])["S_q"] == 0.0
    with pytest.raises(ValueError, match="1–5"):
        lbw_quality([dict.fromkeys(LBW_DIMENSIONS, 6)])
    with pytest.raises(ValueError, match="no judged"):
        lbw_quality([])
    assert combined_score(60.0, 80.0) == 70.0


def test_longen_quality():
    one = dict(zip(LONGEN_CRITERIA, [8, 7, 9, 8, 8, 6, 5]))  # mean 51/7
    two = dict.fromkeys(LONGEN_CRITERIA, 10)
    q = longen_quality([one, two])
    assert q["quality"] == pytest.approx((51 / 7 + 10) / 2)
    assert q["relevance"] == pytest.approx(9.0)
    with pytest.raises(ValueError, match="1–10"):
        longen_quality([dict.fromkeys(LONGEN_CRITERIA, 0)])


# --------------------------------------------------------------------------- Ruler


def test_ruler():
    items = [{"id": "r0", "length": 1000, "lang": "en"}, {"id": "r1", "length": 1000, "lang": "zh"},
             {"id": "r2", "length": 2000, "lang": "en"}]
    outputs = {"r0": words(500), "r1": "好" * 1500, "r2": words(2000)}
    table = ruler_scores(items, outputs)
    assert list(table["ratio"]) == [0.5, 1.5, 1.0]
    summary = ruler_summary(items, outputs)
    assert list(summary.index) == [1000, 2000]
    assert summary.loc[1000, "mean_words"] == 1000 and summary.loc[1000, "max_words"] == 1500
    assert summary.loc[1000, "S_l"] == pytest.approx((50 + 250 / 3) / 2)
    assert summary.loc[2000, "S_l"] == 100.0
    by_lang = ruler_summary(items, outputs, by=("lang", "required"))
    assert by_lang.loc[("zh", 1000), "n"] == 1


# --------------------------------------------------------------------------- numbers and constraints


@pytest.mark.parametrize("token, value", [
    ("2000", 2000), ("2,000", 2000), ("12,500", 12500), ("2k", 2000), ("2.5k", 2500), ("3K", 3000),
    ("5千", 5000), ("1.5万", 15000), ("两千", 2000), ("二千", 2000), ("三千五百", 3500), ("三千五", 3500),
    ("一万", 10000), ("一万五", 15000), ("一万二千", 12000), ("两千零五十", 2050), ("三千零五", 3005),
    ("十", 10), ("十五", 15), ("二十", 20), ("八百", 800), ("3千5百", 3500),
])
def test_parse_number(token, value):
    assert parse_number(token) == value


@pytest.mark.parametrize("constraint, kind, interval", [
    ("around 2000 words", "about", (1600, 2400)),
    ("大约2000字", "about", (1600, 2400)),
    ("约两千字", "about", (1600, 2400)),
    ("一万字左右", "about", (8000, 12000)),
    ("2000-3000 words", "range", (2000, 3000)),
    ("2000字至3000字", "range", (2000, 3000)),
    ("两千到三千字", "range", (2000, 3000)),
    ("between 2,000 and 3,000 words", "range", (2000, 3000)),
    ("3000-2000 words", "range", (2000, 3000)),
    ("more than 2000 words", "above", (2000, 3000)),
    ("大于三千五百字", "above", (3500, 5250)),
    ("不少于5千字", "above", (5000, 7500)),
    ("at least 2k words", "above", (2000, 3000)),
    ("less than 4000 words", "below", (2000, 4000)),
    ("小于2000字", "below", (1000, 2000)),
    ("不超过两千字", "below", (1000, 2000)),
    ("no more than 6,000 words", "below", (3000, 6000)),
    ("3000字以内", "below", (1500, 3000)),
])
def test_parse_constraint(constraint, kind, interval):
    assert parse_constraint(constraint, kind) == pytest.approx(interval)
    # the type is inferred from the wording when not given
    assert parse_constraint(constraint) == pytest.approx(interval)


def test_parse_constraint_ignores_counts_that_are_not_lengths():
    assert parse_constraint("写一篇大约两千字的文章") == pytest.approx((1600, 2400))
    assert parse_constraint("in 5 sections, about 2000 words") == pytest.approx((1600, 2400))
    assert parse_constraint("2000-3000 words, in 5 parts", "range") == (2000, 3000)


@pytest.mark.parametrize("constraint, kind, match", [
    ("about some words", "about", "expected 1 number"),
    ("2000 words", None, "cannot tell"),
    ("around 2000 words", "exactly", "unknown constraint type"),
    ("2000 words", "range", "expected 2 numbers"),
    ("about 0 words", "about", "positive"),
])
def test_parse_constraint_errors(constraint, kind, match):
    with pytest.raises(ValueError, match=match):
        parse_constraint(constraint, kind)


@pytest.mark.parametrize("words_, expected", [
    (2000, 1.0), (1600, 1.0), (2400, 1.0), (1500, 2 * 1500 / 1600 - 1), (800, 0.0), (0, 0.0),
    (2600, 3 - 2 * 2600 / 2400), (3600, 0.0), (5000, 0.0),
])
def test_longen_score_about_2000(words_, expected):
    assert longen_score((1600, 2400), words_) == pytest.approx(expected)


def test_longen_score_pinned():
    assert longen_score((1600, 2400), 1500) == pytest.approx(0.875)
    assert longen_score((2000, 3000), 3300) == pytest.approx(0.8)  # 3 - 6600/3000
    with pytest.raises(ValueError):
        longen_score((3000, 2000), 100)


def test_longen_scores_use_the_self_lengthen_count():
    items = [
        {"id": "x", "lang": "zh", "type": "below", "constraint": "小于10字", "range": "2-4k"},
        {"id": "y", "lang": "en", "type": "about", "constraint": "around 10 words", "range": "2-4k",
         "interval": (8.0, 12.0)},
        {"id": "z", "lang": "en", "type": "above", "constraint": "more than 10 words", "range": "4-6k"},
    ]
    # Self-Lengthen counts full-width punctuation as words: 8 ideographs + 4 marks = 12 > 10
    text_x = "你好，世界。你好，世界。"
    table = longen_scores(items, {"x": text_x, "y": "one two three four five six seven eight nine ten 11"})
    assert list(table["words"]) == [12, 11, 0]
    assert table.loc[0, "score"] == pytest.approx(3 - 2 * 12 / 10)  # 0.6
    assert list(table["score"][1:]) == [1.0, 0.0]
    summary = longen_summary(items, {"x": text_x, "y": words(11)})
    assert summary["overall"] == pytest.approx(100 * 1.6 / 3)
    assert summary["type"] == pytest.approx({"below": 60.0, "about": 100.0, "above": 0.0})
    assert summary["lang"] == pytest.approx({"zh": 60.0, "en": 50.0})
    assert summary["missing"] == 1


# --------------------------------------------------------------------------- the official LonGen constraints


def test_every_official_longen_constraint_parses():
    root = Path(os.environ.get("SLTK_EVAL_SETS") or Path(__file__).resolve().parents[2] / "shared" / "eval_sets")
    path = root / "LonGen.jsonl"
    if not path.is_file():
        pytest.skip(f"official LonGen.jsonl not found in {root} (set SLTK_EVAL_SETS to its folder)")
    items = load_longen(path)
    assert len(items) == 240
    for it in items:
        a, b = parse_constraint(it["constraint"], it["type"])
        assert 0 < a <= b, it
        # the numbers written in the constraint, as the accepted interval implies them
        written = {"about": [(a + b) / 2], "range": [a, b], "above": [a], "below": [b]}[it["type"]]
        assert written == pytest.approx([float(n) for n in re.findall(r"\d+", it["constraint"])]), it
        low, high = (float(x) * 1000 for x in re.fullmatch(r"(\d+)-(\d+)k", it["range"]).groups())
        assert all(low <= n <= high for n in written), it
        assert parse_constraint(it["constraint"]) == pytest.approx((a, b)), it
