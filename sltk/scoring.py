"""Scores of the long-output benchmarks (pure functions, no model).

LongBench-Write and LongWrite-Ruler count words with the LongWriter convention; LonGen with the
Self-Lengthen one (both in :func:`sltk.text.count_words`). Outputs are given either as a mapping
id -> text or as records with ``id`` and ``text`` (as sltk writes them).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping

import pandas as pd

from .constraints import BUCKETS, bucket, parse_constraint, parse_number  # noqa: F401  (part of this API)
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
]

LBW_DIMENSIONS = ("Relevance", "Accuracy", "Coherence", "Clarity", "Breadth and Depth", "Reading Experience")
LONGEN_CRITERIA = ("relevance", "coherence", "accuracy", "consistency", "clarity", "creativity", "engagement")


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
        words = count_words(text, "longwriter") if text is not None else 0
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
