"""Per-segment repetition curves and the per-model summary."""

import math

import pytest

from sltk import text as textlib
from sltk.degradation import COLUMNS, curve, curves, distinct_n, mean_curve, onset, segment_bounds, summary, units

FRESH = " ".join(f"w{i}" for i in range(20))
LOOP = " ".join(["x", "y"] * 10)


def test_units():
    assert units("The cat, THE cat.", "en") == ["the", "cat,", "the", "cat."]
    assert units("你好 世界", "zh") == ["你", "好", "世", "界"]
    assert units("你好世界") == ["你", "好", "世", "界"]  # detected as Chinese
    with pytest.raises(ValueError, match="unknown language"):
        units("x", "fr")


def test_segment_bounds():
    assert segment_bounds(10, k=3) == [(0, 3), (3, 6), (6, 10)]
    assert segment_bounds(10, window=4) == [(0, 4), (4, 8), (8, 10)]
    assert segment_bounds(3, k=5) == [(0, 1), (1, 2), (2, 3)]
    assert segment_bounds(0, k=5) == [] and segment_bounds(0, window=5) == []
    with pytest.raises(ValueError):
        segment_bounds(10, k=0)
    with pytest.raises(ValueError):
        segment_bounds(10, window=0)


def test_distinct_n():
    assert distinct_n(["a", "b", "a"], 1) == pytest.approx(2 / 3)
    assert distinct_n(["a", "b", "a"], 2) == 1.0
    assert math.isnan(distinct_n(["a"], 2))


def test_curve_pinned():
    # 20 fresh words, then "x y" ten times; bigrams, two segments of 20 words
    table = curve(FRESH + " " + LOOP, k=2, lang="en", n=2)
    assert list(table.columns) == COLUMNS
    assert list(table["start"]) == [0, 20] and list(table["units"]) == [20, 20]
    assert list(table["position"]) == [0.0, 0.5]
    assert list(table["repeated"]) == pytest.approx([0.0, 17 / 19])
    # 19 bigrams start in the second segment (the last word starts none); 17 were seen before
    assert list(table["repeated_before"]) == pytest.approx([0.0, 17 / 19])
    assert list(table["distinct_1"]) == pytest.approx([1.0, 0.1])
    assert list(table["distinct_2"]) == pytest.approx([1.0, 2 / 19])
    assert onset(table, threshold=0.5) == 1
    assert onset(table, threshold=0.95) is None


def test_within_segment_rate_is_the_filter_rate():
    text = FRESH + " " + LOOP + " " + FRESH
    table = curve(text, k=3, lang="en", n=3)
    words = text.split()
    for row in table.itertuples():
        part = " ".join(words[row.start : row.end])
        assert row.repeated == pytest.approx(textlib.repeated_ngram_rate(part, "en", 3))
    # the last third copies the opening: only the cross-text rate sees it
    assert table["repeated_before"].iloc[-1] > 0.5 and table["repeated"].iloc[-1] < 0.5


def test_chinese_characters_and_default_n():
    fresh = "春眠不觉晓处处闻啼鸟夜来风雨声花落知多少白日依山尽黄河入海流欲穷千里目更上一层楼"
    text = fresh + "我们要好好学习天天向上。" * 10
    table = curve(text, k=4)
    assert table["units"].sum() == len(fresh) + 12 * 10
    assert table["repeated_before"].iloc[0] == 0.0
    assert table["repeated_before"].iloc[-1] == 1.0
    assert onset(table) in (1, 2)


def test_windows():
    table = curve(FRESH + " " + LOOP, window=15, lang="en", n=2)
    assert list(table["start"]) == [0, 15, 30]
    assert list(table["units"]) == [15, 15, 10]


def test_empty_and_short_texts():
    assert list(curve("", k=5).columns) == COLUMNS and len(curve("", k=5)) == 0
    short = curve("just three words", k=10, lang="en")
    assert len(short) == 3 and list(short["repeated"]) == [0.0, 0.0, 0.0]


def test_summary_per_model():
    looping = " ".join([FRESH, LOOP, LOOP, LOOP])  # 80 words: the loop starts a quarter of the way in
    outputs = {"base": [FRESH + " " + FRESH.replace("w", "v")], "tuned": [looping, {"id": "t2", "text": FRESH}]}
    table = summary(outputs, k=4, lang="en", n=2, threshold=0.5)
    assert list(table.index) == ["base", "tuned"]
    assert table.loc["base", "outputs"] == 1 and table.loc["base", "onset_share"] == 0.0
    assert math.isnan(table.loc["base", "onset_position"])
    assert table.loc["tuned", "onset_share"] == 0.5
    assert table.loc["tuned", "onset_position"] == 0.25
    assert table.loc["tuned", "onset_units"] == 20
    assert table.loc["tuned", "repeated_before_first"] == 0.0
    assert table.loc["tuned", "distinct_2_last"] < table.loc["tuned", "distinct_2_first"]
    long = curves(outputs, k=4, lang="en", n=2)
    assert set(long["output"]) == {"0", "t2"}
    assert mean_curve(long).shape == (2, 4)
