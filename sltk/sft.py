"""SFT records for both roles, the final dataset with length constraints, and its export.

Every record has one format, the LongWriter-6k ``messages`` form::

    {"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}], ...}

with any metadata as further keys.

Length constraints follow the LonGen intervals: "about N" accepts [0.8N, 1.2N], "A to B" accepts
[A, B], "above N" accepts [N, 1.5N], "below N" accepts [0.5N, N]. The numbers are chosen so that
the text of the record always satisfies its own constraint.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterable

from .constraints import FACTORS, LONGEN_TYPES, interval
from .prompts import extension_prompt
from .text import check_lang, count_words, detect_language, drop_lines

__all__ = [
    "CONSTRAINT_SHARES",
    "constrained_query",
    "constraint_text",
    "extender_record",
    "final_records",
    "generator_record",
    "make_constraint",
    "save_hf_dataset",
    "to_alpaca",
    "to_hf_dataset",
]

# --------------------------------------------------------------------------- role records


def _chat(user: str, assistant: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def generator_record(query: str, extended: str, **meta) -> dict:
    """Generator SFT record: the raw query answered by the extended text."""
    return {"messages": _chat(query, extended), **meta}


def extender_record(
    query: str,
    draft: str,
    extended: str,
    lang: str,
    rng: random.Random,
    keep_prob: float = 0.8,
    **meta,
) -> dict:
    """Extender SFT record: the extension prompt over a line-dropped draft, answered by the extended text."""
    corrupted = drop_lines(draft, keep_prob, rng)
    return {"messages": _chat(extension_prompt(query, corrupted, lang), extended), **meta}


# --------------------------------------------------------------------------- length constraints

CONSTRAINT_SHARES = {"about": 0.40, "range": 0.25, "above": 0.10, "below": 0.25}

# Rounding steps, coarse to fine; a finer one is used when a coarser one cannot give numbers the
# text satisfies (or would give 0). Step 1 always works for words >= 1.
_STEPS = (1000, 500, 100, 50, 10, 5, 1)
_COARSE_ABOUT_PROB = 0.2  # "about N" rounds to 2,000 this often

_TEXT = {
    "en": {
        "about": "around {n} words",
        "range": "between {a} and {b} words",
        "above": "more than {n} words",
        "below": "less than {n} words",
    },
    # 以上 = at least / more than, 以内 = within / less than.
    "zh": {
        "about": "{n}字左右",
        "range": "{a}到{b}字",
        "above": "{n}字以上",
        "below": "{n}字以内",
    },
}


def _satisfies(words: int, kind: str, n: int) -> bool:
    lo, hi = FACTORS[kind]
    return lo * n <= words <= hi * n


def _single_number(words: int, kind: str, steps: Iterable[int]) -> int:
    for step in steps:
        if kind == "about":
            n = math.floor(words / step + 0.5) * step
        elif kind == "above":
            n = words // step * step
        else:
            n = -(-words // step) * step
        if _satisfies(words, kind, n):
            return n
    raise AssertionError("unreachable: step 1 always satisfies")


def _range_numbers(words: int) -> tuple[int, int]:
    for step in _STEPS:
        a = words // step * step
        if a > 0:
            b = -(-words // step) * step
            # A text of exactly a round length sits on the low end of the next range.
            return a, (b if b > a else a + step)
    raise AssertionError("unreachable: step 1 always gives a > 0")


def constraint_text(kind: str, numbers: tuple[int, ...], lang: str) -> str:
    """The wording of a constraint, e.g. "between 2000 and 3000 words" or "2000字以上"."""
    template = _TEXT[check_lang(lang)][kind]
    if kind == "range":
        return template.format(a=numbers[0], b=numbers[1])
    return template.format(n=numbers[0])


def _pick_type(rng: random.Random) -> str:
    return rng.choices(LONGEN_TYPES, weights=[CONSTRAINT_SHARES[t] for t in LONGEN_TYPES])[0]


def make_constraint(words: int, lang: str, rng: random.Random, kind: str | None = None) -> dict:
    """A length constraint that a text of ``words`` words (Self-Lengthen count) satisfies.

    The type is drawn with shares about 40%, range 25%, above 10%, below 25% unless ``kind`` is
    given. Numbers are rounded to 1,000 ("about": to 2,000 with probability 0.2), or to 500, 100,
    50, 10, 5, 1 when a coarser rounding would break the LonGen interval or give 0. Returns
    ``{"type", "constraint", "low", "high"}`` with [low, high] the accepted interval.
    """
    check_lang(lang)
    if words < 1:
        raise ValueError(f"words must be >= 1, got {words}")
    if kind is None:
        kind = _pick_type(rng)
    elif kind not in LONGEN_TYPES:
        raise ValueError(f"unknown constraint type {kind!r}; valid: {', '.join(LONGEN_TYPES)}")
    if kind == "range":
        numbers = _range_numbers(words)
    else:
        steps = _STEPS
        if kind == "about" and rng.random() < _COARSE_ABOUT_PROB:
            steps = (2000, *_STEPS)
        numbers = (_single_number(words, kind, steps),)
    low, high = interval(kind, numbers)
    return {"type": kind, "constraint": constraint_text(kind, numbers, lang), "low": low, "high": high}


_QUERY_TEMPLATES = {
    "en": (
        "Write {c}.",
        "The answer should be {c} long.",
        "Please make it {c}.",
        "Length: {c}.",
        "Aim for {c}.",
    ),
    "zh": (
        "字数要求：{c}。",
        "请写{c}。",
        "全文{c}。",
        "篇幅要求{c}。",
    ),
}
_END_MARKS = {"en": ".!?。！？", "zh": ".!?。！？…"}
_DEFAULT_END = {"en": ".", "zh": "。"}
_JOIN = {"en": " ", "zh": ""}


def constrained_query(
    query: str, constraint: dict | str, lang: str, rng: random.Random | None = None
) -> str:
    """``query`` with the length constraint appended as one natural sentence.

    ``constraint`` is a :func:`make_constraint` result or its text; ``rng`` picks the wording
    (the first template when None).
    """
    check_lang(lang)
    text = constraint["constraint"] if isinstance(constraint, dict) else constraint
    templates = _QUERY_TEMPLATES[lang]
    template = rng.choice(templates) if rng is not None else templates[0]
    body = query.rstrip()
    if body and body[-1] not in _END_MARKS[lang] and body[-1] not in "\"'”’)）」』":
        body += _DEFAULT_END[lang]
    return body + _JOIN[lang] + template.format(c=text)


# --------------------------------------------------------------------------- final dataset


def final_records(
    pool: list[dict],
    min_words: int = 2000,
    max_words: int = 8000,
    rng: random.Random | None = None,
) -> list[dict]:
    """The final SFT set: texts within [min_words, max_words], each query given a length constraint.

    ``pool`` items are ``{"id", "query", "text", "lang", ...}`` (drafts and extensions of all
    iterations; a missing ``lang`` is detected from the text). Identical (query, text) pairs are
    kept once. Records: ``{"messages", "id", "lang", "words", "constraint"}``, in pool order.
    """
    if not 1 <= min_words <= max_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got {min_words} and {max_words}")
    if rng is None:
        rng = random.Random()
    seen: set[tuple[str, str]] = set()
    records = []
    for index, item in enumerate(pool):
        query, text = item["query"], item["text"]
        key = (query.strip(), text.strip())
        if key in seen:
            continue
        seen.add(key)
        words = count_words(text)
        if not min_words <= words <= max_words:
            continue
        lang = item.get("lang") or detect_language(text)
        constraint = make_constraint(words, lang, rng)
        records.append({
            "messages": _chat(constrained_query(query, constraint, lang, rng), text),
            "id": item.get("id", index),
            "lang": lang,
            "words": words,
            "constraint": constraint,
        })
    return records


# --------------------------------------------------------------------------- export


def to_hf_dataset(records: list[dict]):
    """Records as a ``datasets.Dataset`` (a ``messages`` column plus the metadata columns)."""
    from datasets import Dataset

    return Dataset.from_list(list(records))


def save_hf_dataset(records: list[dict], folder: str | os.PathLike):
    """Save records with ``Dataset.save_to_disk``; returns the dataset."""
    dataset = to_hf_dataset(records)
    dataset.save_to_disk(str(folder))
    return dataset


def _turn(messages: list[dict], role: str) -> str:
    for message in messages:
        if message["role"] == role:
            return message["content"]
    raise ValueError(f"record has no {role} message: {messages!r}")


def to_alpaca(records: Iterable[dict]) -> list[dict]:
    """Records as Alpaca rows: ``{"instruction": user, "input": "", "output": assistant}``."""
    return [
        {
            "instruction": _turn(r["messages"], "user"),
            "input": "",
            "output": _turn(r["messages"], "assistant"),
        }
        for r in records
    ]

