"""Text utilities: word counting, language detection, paragraph splitting,
corruption, quality filters and length-biased sampling.

Everything here is pure Python and deterministic given a seeded ``random.Random``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

__all__ = [
    "CLOSERS",
    "CONVENTIONS",
    "DEFAULT_NGRAM",
    "FILTERS",
    "LANGUAGES",
    "META_WORDS_EN",
    "META_WORDS_ZH",
    "TERMINAL_MARKS",
    "check_filters",
    "check_lang",
    "clean_prefix",
    "count_words",
    "detect_language",
    "drop_lines",
    "ends_properly",
    "first_half",
    "has_meta_commentary",
    "has_repeated_ngram",
    "join_units",
    "keep_probabilities",
    "length_biased_sample",
    "ngram_units",
    "repeated_ngram_rate",
    "split_units",
    "split_units_with_sep",
    "strip_meta_lines",
]

# --------------------------------------------------------------------------- counting

CONVENTIONS = ("self-lengthen", "longwriter")

_CJK_IDEOGRAPH = re.compile(r"[\u4e00-\u9fff]")
_SL_WIDE = re.compile(r"[\u4e00-\u9fff\u3000-\u303f\uff00-\uffef]")
_LW_LATIN_WORD = re.compile(r"\b[a-zA-Z]+\b")


def count_words(text: str, convention: str = "self-lengthen") -> int:
    """Count words in ``text`` under a named convention.

    ``"self-lengthen"``: every character in U+4E00–U+9FFF, U+3000–U+303F or
    U+FF00–U+FFEF is one word; those characters are replaced by spaces and each
    remaining whitespace-separated token is one word.

    ``"longwriter"``: characters in U+4E00–U+9FFF plus matches of
    ``\\b[a-zA-Z]+\\b``; digits and punctuation do not count, "don't" counts 2.
    """
    if convention == "self-lengthen":
        wide = len(_SL_WIDE.findall(text))
        return wide + len(_SL_WIDE.sub(" ", text).split())
    if convention == "longwriter":
        # The regex is applied as-is (Unicode \b), so latin letters glued to a
        # CJK character or a digit do not form a match; this mirrors the
        # benchmark's reference counter.
        return len(_CJK_IDEOGRAPH.findall(text)) + len(_LW_LATIN_WORD.findall(text))
    raise ValueError(
        f"unknown word-count convention {convention!r}; valid: {', '.join(CONVENTIONS)}"
    )


# --------------------------------------------------------------------------- language

_LATIN_WORD = re.compile(r"[A-Za-z]+")
LANGUAGES = ("en", "zh")


def detect_language(text: str) -> str:
    """Return ``"zh"`` or ``"en"``.

    Rule: with c = number of characters in U+4E00–U+9FFF, t = number of
    non-whitespace characters and w = number of latin-letter runs, the text is
    ``"zh"`` when c > 0 and (c >= 0.2·t or c > w); otherwise ``"en"`` (also for
    empty text).
    """
    cjk = len(_CJK_IDEOGRAPH.findall(text))
    if cjk == 0:
        return "en"
    non_space = sum(1 for ch in text if not ch.isspace())
    latin_words = len(_LATIN_WORD.findall(text))
    return "zh" if cjk >= 0.2 * non_space or cjk > latin_words else "en"


def check_lang(lang: str | None, allow_none: bool = False) -> str | None:
    """``lang`` if it is one of :data:`LANGUAGES` (or None where ``allow_none``), else ValueError."""
    if lang is None and allow_none:
        return None
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}; valid: {', '.join(LANGUAGES)}{' or None' * allow_none}")
    return lang


def _resolve_lang(text: str, lang: str | None) -> str:
    return detect_language(text) if lang is None else check_lang(lang)


# --------------------------------------------------------------------------- splitting

PARAGRAPH_SEP = "\n\n"
LINE_SEP = "\n"


def split_units_with_sep(text: str) -> tuple[list[str], str]:
    """Split ``text`` into units and return ``(units, separator)``.

    Units are paragraphs (runs of lines separated by one or more blank or
    whitespace-only lines), separator ``"\\n\\n"``. If that yields at most two
    paragraphs, units are the non-blank lines instead, separator ``"\\n"``.
    Trailing whitespace of every unit is stripped; empty units are dropped.
    """
    lines = text.splitlines()
    paragraphs: list[str] = []
    current: list[str] = []
    for line in lines:
        if line.strip():
            current.append(line.rstrip())
        elif current:
            paragraphs.append("\n".join(current))
            current = []
    if current:
        paragraphs.append("\n".join(current))
    if len(paragraphs) > 2:
        return paragraphs, PARAGRAPH_SEP
    return [line.rstrip() for line in lines if line.strip()], LINE_SEP


def split_units(text: str) -> list[str]:
    """Split ``text`` into paragraphs, or lines when there are at most two paragraphs."""
    return split_units_with_sep(text)[0]


def join_units(units: Sequence[str], sep: str = PARAGRAPH_SEP) -> str:
    """Join units back into text with ``sep``."""
    return sep.join(units)


def first_half(text: str) -> str:
    """The first ⌊n/2⌋ units of ``text``, joined with the separator used to split."""
    units, sep = split_units_with_sep(text)
    return join_units(units[: len(units) // 2], sep)


def drop_lines(
    text: str, keep_prob: float = 0.8, rng: random.Random | None = None
) -> str:
    """Random line removal: keep each ``\\n``-separated line with probability ``keep_prob``."""
    if not 0.0 <= keep_prob <= 1.0:
        raise ValueError(f"keep_prob must be in [0, 1], got {keep_prob}")
    if rng is None:
        rng = random.Random()
    return "\n".join(line for line in text.split("\n") if rng.random() < keep_prob)


# --------------------------------------------------------------------------- filters

FILTERS = ("ending", "repetition", "meta")

# A text must end with one of these, optionally followed by CLOSERS.
# "..." and "……" are covered because they end with "." and "…".
TERMINAL_MARKS = frozenset(".!?。！？…")
CLOSERS = frozenset("\"'”’)]」』》】）〉")


def _without_signature(text: str) -> str:
    """The text without a closing letter signature ("Warm regards,\nSarah"), which ends no sentence."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) >= 3 and 0 < len(lines[-1].split()) <= 5 and lines[-2].endswith((",", "，")) \
            and len(lines[-2].split()) <= 5:
        return "\n".join(lines[:-2])
    return text


def ends_properly(text: str, lang: str | None = None) -> bool:
    """True when the stripped text ends with a sentence-closing mark.

    Accepted for both languages: ``. ! ? 。 ！ ？ …`` (so also ``...`` and
    ``……``), each optionally followed by closing quotes or brackets
    (``" ' ” ’ ) ] 」 』 》 】 ） 〉``). A closer without a terminal mark before it
    is rejected, as is empty text. A letter's signature after a short valediction
    ("Best regards,\nSam") is looked past: the sentence before it must end properly.
    """
    _resolve_lang(text, lang)  # validates ``lang``; the rule is the same for both
    body = _without_signature(text).rstrip()
    while body and body[-1] in CLOSERS:
        body = body[:-1].rstrip()
    return bool(body) and body[-1] in TERMINAL_MARKS


DEFAULT_NGRAM = {"en": 10, "zh": 13}


def ngram_units(text: str, lang: str | None = None) -> list[str]:
    """The units n-grams are made of: lower-cased whitespace tokens, punctuation kept (en), or every
    non-whitespace character, ASCII included (zh); ``lang`` None detects it."""
    if _resolve_lang(text, lang) == "en":
        return text.lower().split()
    return [ch for ch in text if not ch.isspace()]


def _ngram_setup(text: str, lang: str | None, n: int | None) -> tuple[list[str], int]:
    lang = _resolve_lang(text, lang)
    if n is None:
        n = DEFAULT_NGRAM[lang]
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return ngram_units(text, lang), n


def has_repeated_ngram(
    text: str, lang: str | None = None, n: int | None = None
) -> bool:
    """True when some n-gram occurs at least twice.

    English (default n=10): n-grams of whitespace-separated tokens, compared
    lower-cased (punctuation stays attached to its token). Chinese (default
    n=13): n-grams of characters after removing whitespace; every character,
    including ASCII letters and digits, is one unit.
    """
    units, n = _ngram_setup(text, lang, n)
    seen: set[tuple[str, ...]] = set()
    for i in range(len(units) - n + 1):
        gram = tuple(units[i : i + n])
        if gram in seen:
            return True
        seen.add(gram)
    return False


def repeated_ngram_rate(
    text: str, lang: str | None = None, n: int | None = None
) -> float:
    """Share of n-gram positions whose n-gram already occurred earlier (0.0 if too short).

    Units and defaults as in :func:`has_repeated_ngram`.
    """
    units, n = _ngram_setup(text, lang, n)
    positions = len(units) - n + 1
    if positions <= 0:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for i in range(positions):
        gram = tuple(units[i : i + n])
        if gram in seen:
            repeats += 1
        else:
            seen.add(gram)
    return repeats / positions


META_WORDS_EN = (
    "revised",
    "revision",
    "revisions",
    "version",
    "versions",
    "response",
    "responses",
    "paragraph",
    "paragraphs",
)
META_WORDS_ZH = ("修改", "修订", "改写", "版本", "回答", "回复", "段落", "扩写", "润色")

_META_EN_RE = re.compile(r"\b(?:" + "|".join(META_WORDS_EN) + r")\b", re.IGNORECASE)

HEAD_LINES = 2
TAIL_LINES = 3


def has_meta_commentary(text: str, lang: str | None = None) -> bool:
    """True when the first 2 or last 3 non-empty lines talk about the text itself.

    English: any word of ``META_WORDS_EN`` as a whole word, case-insensitively
    ("Response" matches, "responsible" does not). Chinese: any entry of
    ``META_WORDS_ZH`` as a substring (Chinese has no word boundaries).
    """
    lang = _resolve_lang(text, lang)
    lines = [line for line in text.splitlines() if line.strip()]
    edges = lines[:HEAD_LINES] + lines[HEAD_LINES:][-TAIL_LINES:]
    if lang == "en":
        return any(_META_EN_RE.search(line) for line in edges)
    return any(word in line for line in edges for word in META_WORDS_ZH)


_OPENER_EN = re.compile(r"^(?:sure|certainly|of course|here(?:'s| is| are)|below (?:is|are))\b", re.IGNORECASE)
_CLOSER_EN = re.compile(r"^(?:i hope|let me know|feel free|note:)", re.IGNORECASE)


_TAG_OR_LINK = re.compile(r"^(?:[#@]\S+|https?://\S+)$")


def _is_meta_line(line: str, lang: str, first: bool) -> bool:
    """A line that announces (first) or signs off (last) instead of being part of the text.

    Openers: up to 30 words (40 Chinese characters) that mention the text itself, or start like
    "Here is", or end with a colon. Closers: up to 80 words that mention the text itself ("I hope
    this expanded version..."), start like "I hope" / "Let me know", or consist only of hashtags,
    handles and links.
    """
    words, line = count_words(line), line.strip()
    if lang == "en":
        mentions = bool(_META_EN_RE.search(line))
        pattern = (_OPENER_EN if first else _CLOSER_EN).match(line)
    else:
        mentions = any(word in line for word in META_WORDS_ZH)
        pattern = False
    if first:
        return words <= (30 if lang == "en" else 40) and (mentions or bool(pattern) or line.endswith((":", "：")))
    if line.split() and all(_TAG_OR_LINK.match(tok) for tok in line.split()):
        return True
    return words <= (80 if lang == "en" else 120) and (mentions or bool(pattern))


def strip_meta_lines(text: str, lang: str | None = None, head: bool = True, tail: bool = True) -> str:
    """Drop short opening (`head`) and closing (`tail`) lines that talk about the text itself.

    "Here is the expanded version:" at the top, or "I hope this revised version helps." at the
    end; the body in between is kept as it is.
    """
    lang = _resolve_lang(text, lang)
    lines = text.strip().splitlines()
    while head and lines and (not lines[0].strip() or _is_meta_line(lines[0], lang, first=True)):
        lines.pop(0)
    while tail and lines and (not lines[-1].strip() or _is_meta_line(lines[-1], lang, first=False)):
        lines.pop()
    return "\n".join(lines)


def check_filters(text: str, lang: str | None = None) -> list[str]:
    """Names of the failed filters, in ``FILTERS`` order; an empty list means the text passes."""
    lang = _resolve_lang(text, lang)
    failed = []
    if not ends_properly(text, lang):
        failed.append("ending")
    if has_repeated_ngram(text, lang):
        failed.append("repetition")
    if has_meta_commentary(text, lang):
        failed.append("meta")
    return failed


def clean_prefix(text: str, lang: str | None = None, n: int | None = None, ending: bool = True) -> str:
    """The leading whole units (paragraphs, or lines) of a text that loops or is cut off, clean.

    Units are kept up to the one that would bring in the first repeated n-gram (as in
    :func:`has_repeated_ngram`); then, with ``ending``, trailing units are dropped until the text
    ends properly. Returns ``""`` when no unit qualifies; a clean text comes back unchanged.
    """
    lang = _resolve_lang(text, lang)
    units, sep = split_units_with_sep(text)
    kept: list[str] = []
    for unit in units:
        if has_repeated_ngram(join_units(kept + [unit], sep), lang, n):
            break
        kept.append(unit)
    while ending and kept and not ends_properly(join_units(kept, sep), lang):
        kept.pop()
    return join_units(kept, sep)


# --------------------------------------------------------------------------- sampling


def keep_probabilities(lengths: Sequence[float]) -> list[float]:
    """Keep probability of each item, in the original order.

    Items are ranked ascending by length (ties by original index); the item at
    rank i of n gets r = 1 − i/n and probability max(0, 1 − 2·r³). The shortest
    ~21% get 0; the mean is about 0.595.
    """
    n = len(lengths)
    order = sorted(range(n), key=lambda i: (lengths[i], i))
    probs = [0.0] * n
    for rank, idx in enumerate(order):
        r = 1.0 - rank / n
        probs[idx] = max(0.0, 1.0 - 2.0 * r**3)
    return probs


def length_biased_sample(
    lengths: Sequence[float], rng: random.Random | None = None
) -> list[int]:
    """Indices (ascending) of the items kept by length-biased sampling.

    One ``rng.random()`` draw per item in original order, so a seeded ``rng``
    gives a reproducible result.
    """
    if rng is None:
        rng = random.Random()
    return [i for i, p in enumerate(keep_probabilities(lengths)) if rng.random() < p]
