"""Scores of the long-output benchmarks (pure functions, no model).

LongBench-Write and LongWrite-Ruler count words with the LongWriter convention; LonGen with the
Self-Lengthen one (both in :func:`sltk.text.count_words`). Outputs are given either as a mapping
id -> text or as records with ``id`` and ``text`` (as sltk writes them).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping

import pandas as pd

from .benchmarks import BUCKETS, LONGEN_TYPES, bucket
from .text import count_words

__all__ = [
    "LBW_DIMENSIONS",
    "LONGEN_CRITERIA",
    "combined_score",
    "lbw_quality",
    "length_score",
    "longbench_write_scores",
    "longbench_write_summary",
    "longen_quality",
    "longen_score",
    "longen_scores",
    "longen_summary",
    "parse_constraint",
    "parse_number",
    "ruler_scores",
    "ruler_summary",
    "words_longwriter",
]

LBW_DIMENSIONS = ("Relevance", "Accuracy", "Coherence", "Clarity", "Breadth and Depth", "Reading Experience")
LONGEN_CRITERIA = ("relevance", "coherence", "accuracy", "consistency", "clarity", "creativity", "engagement")


def words_longwriter(text: str) -> int:
    """Word count under the LongWriter convention (CJK ideographs plus latin-letter words)."""
    return count_words(text, "longwriter")


def _texts(outputs) -> dict[str, str]:
    if isinstance(outputs, Mapping):
        return {str(k): v for k, v in outputs.items()}
    texts = {}
    for record in outputs:
        if "id" not in record or "text" not in record:
            raise ValueError(f"an output record needs 'id' and 'text', got keys {sorted(record)}")
        if str(record["id"]) in texts:
            raise ValueError(f"two outputs for id {record['id']!r}; keep one output per item")
        texts[str(record["id"])] = record["text"]
    return texts


def _match(items: list[dict], outputs) -> dict[str, str]:
    texts = _texts(outputs)
    unknown = set(texts) - {item["id"] for item in items}
    if unknown:
        raise ValueError(f"{len(unknown)} outputs have ids that are not in the benchmark, e.g. "
                         f"{sorted(unknown)[:3]}; are these outputs of another benchmark?")
    return texts


# --------------------------------------------------------------------------- LongBench-Write length


def length_score(required: float, produced: float) -> float:
    """S_l (0–100) of a produced length against the required one; zero at l/3 and at 4l, and for no output."""
    if required <= 0:
        raise ValueError(f"the required length must be positive, got {required}")
    if produced <= 0:
        return 0.0
    if produced > required:
        return 100.0 * max(0.0, 1.0 - (produced / required - 1.0) / 3.0)
    return 100.0 * max(0.0, 1.0 - (required / produced - 1.0) / 2.0)


def longbench_write_scores(items: list[dict], outputs) -> pd.DataFrame:
    """One row per item: id, bucket, required and produced length, S_l. A missing output counts as 0 words."""
    texts = _match(items, outputs)
    rows = []
    for item in items:
        text = texts.get(item["id"])
        words = words_longwriter(text) if text is not None else 0
        rows.append({"id": item["id"], "lang": item.get("lang"), "bucket": bucket(item["length"]),
                     "required": item["length"], "words": words, "missing": text is None,
                     "S_l": length_score(item["length"], words)})
    return pd.DataFrame(rows, columns=["id", "lang", "bucket", "required", "words", "missing", "S_l"])


def longbench_write_summary(items: list[dict], outputs, judgments: Mapping[str, Mapping] | None = None) -> pd.DataFrame:
    """S_l, S_q and S̄ overall and per bucket (rows ``overall`` then the buckets in order).

    ``judgments`` maps an item id to its six LongBench-Write dimension scores (1–5); items the
    judge never scored are left out of S_q (its ``n_judged`` column says how many remain).
    Without judgments the S_q and S̄ columns are NaN.
    """
    per_item = longbench_write_scores(items, outputs)
    judgments = judgments or {}
    rows = []
    groups = [("overall", per_item)] + [(label, per_item[per_item["bucket"] == label]) for *_, label in BUCKETS]
    for label, part in groups:
        s_l = float(part["S_l"].mean()) if len(part) else float("nan")
        judged = [judgments[i] for i in part["id"] if i in judgments]
        s_q = lbw_quality(judged)["S_q"] if judged else float("nan")
        rows.append({"group": label, "n": len(part), "missing": int(part["missing"].sum()), "n_judged": len(judged),
                     "S_l": s_l, "S_q": s_q, "S": combined_score(s_l, s_q)})
    return pd.DataFrame(rows).set_index("group")


def combined_score(s_l: float, s_q: float) -> float:
    """S̄ = (S_l + S_q) / 2."""
    return (s_l + s_q) / 2.0


def _checked_means(scores, names, top: int, what: str) -> dict[str, float]:
    """Mean score per name over the items, refusing any score outside 1–`top`."""
    scores = list(scores)
    if not scores:
        raise ValueError(f"no judged items to compute {what} from")
    out = {}
    for name in names:
        values = [s[name] for s in scores]
        bad = [v for v in values if not 1 <= v <= top]
        if bad:
            raise ValueError(f"{name} scores must be within 1–{top}, got {bad[:3]}")
        out[name] = statistics.fmean(values)
    return out


def lbw_quality(scores: Iterable[Mapping[str, float]]) -> dict:
    """Per dimension (mean − 1) × 25 over the items, and S_q = their mean (each 0–100)."""
    means = _checked_means(scores, LBW_DIMENSIONS, 5, "S_q")
    out = {dim: (mean - 1.0) * 25.0 for dim, mean in means.items()}
    out["S_q"] = statistics.fmean(out[dim] for dim in LBW_DIMENSIONS)
    return out


# --------------------------------------------------------------------------- LongWrite-Ruler


def ruler_scores(items: list[dict], outputs) -> pd.DataFrame:
    """One row per item: id, language, required and produced length (LongWriter count), ratio and S_l."""
    table = longbench_write_scores(items, outputs).drop(columns=["bucket"])
    table["ratio"] = table["words"] / table["required"]
    return table


def ruler_summary(items: list[dict], outputs, by: tuple[str, ...] = ("required",)) -> pd.DataFrame:
    """Produced length against required length: n, mean/median/max words, mean ratio and S_l per group."""
    table = ruler_scores(items, outputs)
    grouped = table.groupby(list(by), sort=True)
    return pd.DataFrame({
        "n": grouped.size(),
        "mean_words": grouped["words"].mean(),
        "median_words": grouped["words"].median(),
        "max_words": grouped["words"].max(),
        "ratio": grouped["ratio"].mean(),
        "S_l": grouped["S_l"].mean(),
    })


# --------------------------------------------------------------------------- numbers in constraints

_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "兩": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7,
              "八": 8, "九": 9}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000, "k": 1000, "K": 1000, "万": 10000, "萬": 10000}
_ARABIC = r"\d{1,3}(?:[,，]\d{3})+(?!\d)|\d+(?:\.\d+)?"
_ARABIC_RE = re.compile(_ARABIC)
_CN = "零〇一二两兩三四五六七八九十百千万萬"
# A number: Arabic digits and/or Chinese numerals, with multipliers (k, 千, 万) glued on.
_NUMBER = re.compile(rf"(?:{_ARABIC}|[{_CN}])(?:{_ARABIC}|[{_CN}]|[kK](?![a-zA-Z]))*")


def parse_number(token: str) -> float:
    """The value of a number written with Arabic digits, Chinese numerals or both.

    "2000", "2,000", "2k", "2.5k", "5千", "1.5万", "两千", "三千五百", "三千五" (3500), "一万五"
    (15000), "两千零五十" (2050).
    """
    total = 0.0  # everything before the last 万
    section = 0.0  # the part below 万
    digit: float | None = None
    last_unit = 1
    pos = 0
    token = token.strip()
    if not token:
        raise ValueError("empty number")
    while pos < len(token):
        m = _ARABIC_RE.match(token, pos)
        if m:
            digit = float(re.sub("[,，]", "", m.group()))
            pos = m.end()
            continue
        ch = token[pos]
        pos += 1
        if ch in _CN_DIGITS:
            # digits written one after another are positional: 二零二四 = 2024, 零五 = 5
            digit = float(_CN_DIGITS[ch]) + (10 * digit if digit is not None and token[pos - 2] in _CN_DIGITS else 0)
            if ch in "零〇":
                last_unit = 1  # "三千零五" is 3005, not 3500
        elif ch in _CN_UNITS:
            unit = _CN_UNITS[ch]
            if unit == 10000:
                total += (section + (digit or 0.0)) * unit if (section or digit) else unit
                section = 0.0
            else:
                section += (1.0 if digit is None else digit) * unit
            digit, last_unit = None, unit
        else:
            raise ValueError(f"not a number: {token!r}")
    if digit is not None:
        # a bare digit after a unit is one step below it: 三千五 = 3500, 一万五 = 15000
        section += digit * (last_unit // 10 if last_unit >= 10 else 1)
    return total + section


# --------------------------------------------------------------------------- LonGen

# Negated forms come first: "no more than" is a "below", "不少于" an "above".
_TYPE_WORDS = (
    ("below", r"no more than|not more than|no longer than|not exceed(?:ing)?|at most|up to|maximum|"
              r"不(?:要|得|能|可|应)?(?:超过|多于|高于|长于)|最多"),
    ("above", r"no less than|not less than|no fewer than|not fewer than|no shorter than|at least|minimum|"
              r"不(?:要|得|能|可|应)?(?:少于|低于|短于)|至少"),
    ("below", r"less than|fewer than|under|below|within|shorter than|小于|少于|低于|短于|以内|之内|以下"),
    ("above", r"more than|over|above|exceed(?:s|ing)?|longer than|大于|多于|超过|高于|长于|以上"),
    ("about", r"about|around|approximately|roughly|circa|nearly|大约|大概|约|左右|上下"),
)
_UNIT_AFTER = re.compile(r"\s*(?:字|个字|個字|词|詞|单词|單詞|words?\b|characters?\b|chars?\b|tokens?\b)", re.I)
_RANGE_JOIN = re.compile(r"\s*(?:字|词|words?|characters?)?\s*(?:-|–|—|~|～|〜|to|至|到|and|与|和)\s*", re.I)


def _numbers(constraint: str) -> list[tuple[float, int, int]]:
    found = []
    for m in _NUMBER.finditer(constraint):
        token = m.group()
        # a lone Chinese digit is a count ("一篇", "两段"), not a length
        if len(token) == 1 and token in _CN_DIGITS:
            continue
        found.append((parse_number(token), m.start(), m.end()))
    return found


def _joined(constraint: str, found: list, i: int) -> bool:
    """True when number i - 1 and number i are written as a range ("2000-3000", "2000字至3000字")."""
    return i > 0 and bool(_RANGE_JOIN.fullmatch(constraint[found[i - 1][2]:found[i][1]]))


def _infer_type(constraint: str, found: list) -> str:
    if any(_joined(constraint, found, i) for i in range(1, len(found))):
        return "range"
    lowered = constraint.lower()
    for kind, pattern in _TYPE_WORDS:
        if re.search(rf"(?<![a-z])(?:{pattern})(?![a-z])", lowered):
            return kind
    raise ValueError(f"cannot tell the constraint type of {constraint!r}; pass type= "
                     f"({', '.join(LONGEN_TYPES)})")


def parse_constraint(constraint: str, type: str | None = None) -> tuple[float, float]:
    """The accepted word interval (a, b) of a LonGen length constraint.

    about N -> (0.8N, 1.2N); range A–B -> (A, B); above N -> (N, 1.5N); below N -> (0.5N, N).
    Numbers may be Arabic or Chinese ("2000", "2,000", "2k", "两千", "三千五百", "一万"). Without
    ``type`` it is inferred from the wording ("around", "more than", "不少于", "以内", two numbers...).
    """
    if type is not None and type not in LONGEN_TYPES:
        raise ValueError(f"unknown constraint type {type!r}; valid: {', '.join(LONGEN_TYPES)}")
    found = _numbers(constraint)
    kind = type or _infer_type(constraint, found)
    need = 2 if kind == "range" else 1
    if len(found) != need:
        found = _pick(constraint, found, need)
    values = [v for v, *_ in found]
    if any(v <= 0 for v in values):
        raise ValueError(f"a length must be positive in {constraint!r}")
    if kind == "range":
        a, b = sorted(values)
        return (a, b)
    n = values[0]
    return {"about": (0.8 * n, 1.2 * n), "above": (n, 1.5 * n), "below": (0.5 * n, n)}[kind]


def _pick(constraint: str, found: list, need: int) -> list:
    """With more numbers than the type needs, keep those written as a length ("2000 words", "2000-3000字")."""
    with_unit = [i for i, (_, _, end) in enumerate(found) if _UNIT_AFTER.match(constraint, end)]
    if need == 1 and len(with_unit) == 1:
        return [found[with_unit[0]]]
    if need == 2:
        pairs = [(found[i - 1], found[i]) for i in with_unit if _joined(constraint, found, i)]
        if len(pairs) == 1:
            return list(pairs[0])
    raise ValueError(f"expected {need} number{'s' if need > 1 else ''} in {constraint!r}, "
                     f"found {len(found)}")


def longen_score(interval: tuple[float, float], words: float) -> float:
    """Length-following score (0–1): 1 inside [a, b]; 2g/a − 1 below a; 3 − 2g/b above b; never below 0."""
    a, b = interval
    if not 0 < a <= b:
        raise ValueError(f"an interval needs 0 < a <= b, got {interval}")
    if words < a:
        return max(0.0, 2.0 * words / a - 1.0)
    if words > b:
        return max(0.0, 3.0 - 2.0 * words / b)
    return 1.0


def longen_scores(items: list[dict], outputs) -> pd.DataFrame:
    """One row per LonGen item: id, language, range, type, interval, words (Self-Lengthen count), score (0–1)."""
    texts = _match(items, outputs)
    rows = []
    for item in items:
        interval = item.get("interval") or parse_constraint(item["constraint"], item["type"])
        text = texts.get(item["id"])
        words = count_words(text) if text is not None else 0
        rows.append({"id": item["id"], "lang": item["lang"], "range": item.get("range"), "type": item["type"],
                     "a": interval[0], "b": interval[1], "words": words, "missing": text is None,
                     "score": longen_score(interval, words)})
    return pd.DataFrame(rows, columns=["id", "lang", "range", "type", "a", "b", "words", "missing", "score"])


def longen_summary(items: list[dict], outputs) -> dict:
    """Length-following ×100: overall (mean over items), per type, per language and per range."""
    table = longen_scores(items, outputs)

    def means(column: str) -> dict:
        return {key: 100.0 * float(part["score"].mean()) for key, part in table.groupby(column, sort=False)}

    return {"n": len(table), "missing": int(table["missing"].sum()),
            "overall": 100.0 * float(table["score"].mean()) if len(table) else float("nan"),
            "type": means("type"), "lang": means("lang"), "range": means("range")}


def longen_quality(scores: Iterable[Mapping[str, float]]) -> dict:
    """LonGen quality (1–10): the mean of the seven criteria per item, then over items; also per criterion."""
    scores = list(scores)
    out = _checked_means(scores, LONGEN_CRITERIA, 10, "the quality")
    out["quality"] = statistics.fmean(statistics.fmean(s[name] for name in LONGEN_CRITERIA) for s in scores)
    return out
