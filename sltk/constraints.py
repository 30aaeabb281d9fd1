"""Length requirements: LongBench-Write's buckets and LonGen's constraint kinds, and the word
interval a written constraint ("about 2,000 words", "2000-3000字", "不少于三千字") accepts."""

from __future__ import annotations

import re
from fractions import Fraction

LONGEN_TYPES = ("about", "range", "above", "below")

# LonGen's accepted interval of a one-number constraint, as exact multiples of its number:
# about N -> (0.8N, 1.2N), above N -> (N, 1.5N), below N -> (0.5N, N); a range A-B accepts (A, B).
FACTORS = {
    "about": (Fraction(4, 5), Fraction(6, 5)),
    "above": (Fraction(1), Fraction(3, 2)),
    "below": (Fraction(1, 2), Fraction(1)),
}


def interval(kind: str, numbers) -> tuple[float, float]:
    """The accepted word interval of a constraint of type ``kind`` with its numbers (two for a range)."""
    if kind not in LONGEN_TYPES:
        raise ValueError(f"unknown constraint type {kind!r}; valid: {', '.join(LONGEN_TYPES)}")
    if kind == "range":
        a, b = sorted(numbers)
        return float(a), float(b)
    (n,) = numbers
    lo, hi = FACTORS[kind]
    return float(lo * n), float(hi * n)

# LongBench-Write buckets on the required length: (low, high, label), high exclusive except the last.
BUCKETS = ((0, 500, "[0,500)"), (500, 2000, "[500,2000)"), (2000, 4000, "[2000,4000)"), (4000, 20000, "[4000,20000]"))
ABOVE_BUCKETS = ">20000"



def bucket(length: float) -> str:
    """The LongBench-Write bucket label of a required length; ``">20000"`` beyond the last bucket."""
    if length < 0:
        raise ValueError(f"a required length cannot be negative, got {length}")
    for low, high, label in BUCKETS[:-1]:
        if low <= length < high:
            return label
    return BUCKETS[-1][2] if length <= BUCKETS[-1][1] else ABOVE_BUCKETS


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
    return interval(kind, values)


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
