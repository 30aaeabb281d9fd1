"""Where in a long output repetition sets in: per-segment repetition and diversity curves.

A text is cut into units (English: lower-cased whitespace tokens; Chinese: characters, as in the
repetition filter of :mod:`sltk.text`), then into k equal segments or fixed windows of units. Per
segment: the repeated n-gram rate inside the segment, the share of its n-grams that already
occurred anywhere earlier in the text, and distinct-1/2.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import pandas as pd

from . import text as textlib

__all__ = ["COLUMNS", "curve", "curves", "distinct_n", "mean_curve", "onset", "segment_bounds", "summary", "units"]

COLUMNS = ["segment", "start", "end", "position", "units", "repeated", "repeated_before", "distinct_1", "distinct_2"]
DEFAULT_THRESHOLD = 0.2


units = textlib.ngram_units  # the text's units: the repetition filter's, so the two agree


def segment_bounds(count: int, k: int = 10, window: int | None = None) -> list[tuple[int, int]]:
    """(start, end) unit offsets: k near-equal segments, or windows of ``window`` units (the last may be shorter)."""
    if window is not None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        return [(s, min(s + window, count)) for s in range(0, count, window)]
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, count)  # a text shorter than k units gets one unit per segment
    return [(i * count // k, (i + 1) * count // k) for i in range(k)]


def distinct_n(seq: list[str], n: int) -> float:
    """Distinct n-grams over all n-grams (NaN when the sequence is shorter than n)."""
    grams = [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]
    return len(set(grams)) / len(grams) if grams else math.nan


def curve(text: str, k: int = 10, window: int | None = None, lang: str | None = None,
          n: int | None = None) -> pd.DataFrame:
    """One row per segment: offsets, position (start / total units), repetition rates and distinct-1/2.

    ``repeated``: share of the segment's n-gram positions repeating an n-gram of the same segment.
    ``repeated_before``: share of the n-grams starting in the segment that occurred earlier anywhere
    in the text. n defaults to the repetition filter's (10 English words, 13 Chinese characters).
    """
    lang = lang or textlib.detect_language(text)
    seq = units(text, lang)
    n = n or textlib.DEFAULT_NGRAM[lang]
    joiner = " " if lang == "en" else ""
    # for every start position: has its n-gram occurred at an earlier position?
    seen: set[tuple[str, ...]] = set()
    repeat_at = []
    for i in range(len(seq) - n + 1):
        gram = tuple(seq[i : i + n])
        repeat_at.append(gram in seen)
        seen.add(gram)
    rows = []
    for index, (start, end) in enumerate(segment_bounds(len(seq), k, window)):
        part = seq[start:end]
        starts = repeat_at[start:end]
        rows.append({
            "segment": index,
            "start": start,
            "end": end,
            "position": start / len(seq),
            "units": end - start,
            "repeated": textlib.repeated_ngram_rate(joiner.join(part), lang, n),
            "repeated_before": sum(starts) / len(starts) if starts else 0.0,
            "distinct_1": distinct_n(part, 1),
            "distinct_2": distinct_n(part, 2),
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def onset(table: pd.DataFrame, threshold: float = DEFAULT_THRESHOLD, column: str = "repeated_before") -> int | None:
    """Index of the first segment whose ``column`` exceeds ``threshold``, or None."""
    hits = table.index[table[column] > threshold]
    return int(table.loc[hits[0], "segment"]) if len(hits) else None


def _texts(outputs) -> list[tuple[str, str]]:
    pairs = []
    for i, out in enumerate(outputs):
        if isinstance(out, str):
            pairs.append((str(i), out))
        else:
            pairs.append((str(out.get("id", i)), out["text"]))
    return pairs


def curves(outputs: Mapping[str, Iterable], k: int = 10, window: int | None = None, lang: str | None = None,
           n: int | None = None) -> pd.DataFrame:
    """Curves of many outputs in one long table: model, output id, then the :func:`curve` columns.

    ``outputs`` maps a model name to its texts, or to records with ``text`` (and ``id``).
    """
    frames = []
    for model, texts in outputs.items():
        for out_id, text in _texts(texts):
            table = curve(text, k, window, lang, n)
            table.insert(0, "output", out_id)
            table.insert(0, "model", model)
            frames.append(table)
    if not frames:
        return pd.DataFrame(columns=["model", "output", *COLUMNS])
    return pd.concat(frames, ignore_index=True)


def mean_curve(table: pd.DataFrame, column: str = "repeated_before") -> pd.DataFrame:
    """Mean of ``column`` per model (rows) and segment (columns), from :func:`curves`, for plotting."""
    return table.pivot_table(index="model", columns="segment", values=column, aggfunc="mean")


def _mean(rows: list, column: str) -> float:
    return float(pd.Series([r[column] for r in rows], dtype=float).mean())


def summary(outputs: Mapping[str, Iterable], k: int = 10, window: int | None = None, lang: str | None = None,
            n: int | None = None, threshold: float = DEFAULT_THRESHOLD,
            column: str = "repeated_before") -> pd.DataFrame:
    """Per model: how many outputs degrade into repetition, where it sets in, and first vs last segment.

    ``onset_share``: share of outputs with a segment over ``threshold``; ``onset_position``: median
    of where that segment starts (0 = beginning, 1 = end); ``onset_units``: median start in units.
    """
    table = curves(outputs, k, window, lang, n)
    rows = []
    for model in outputs:
        per_model = table[table["model"] == model]
        onsets, firsts, lasts = [], [], []
        for _, one in per_model.groupby("output", sort=False):
            one = one.reset_index(drop=True)
            hit = onset(one, threshold, column)
            if hit is not None:
                onsets.append(one.loc[hit, ["position", "start"]])
            firsts.append(one.iloc[0])
            lasts.append(one.iloc[-1])
        count = len(firsts)
        rows.append({
            "model": model,
            "outputs": count,
            "units_mean": float(per_model.groupby("output")["units"].sum().mean()) if count else math.nan,
            "onset_share": len(onsets) / count if count else math.nan,
            "onset_position": float(pd.Series([o["position"] for o in onsets]).median()) if onsets else math.nan,
            "onset_units": float(pd.Series([o["start"] for o in onsets]).median()) if onsets else math.nan,
            f"{column}_mean": float(per_model[column].mean()) if count else math.nan,
            f"{column}_first": _mean(firsts, column),
            f"{column}_last": _mean(lasts, column),
            "distinct_2_first": _mean(firsts, "distinct_2"),
            "distinct_2_last": _mean(lasts, "distinct_2"),
        })
    return pd.DataFrame(rows).set_index("model")
