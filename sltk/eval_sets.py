"""Loaders for the public long-output benchmarks: LongBench-Write, LongWrite-Ruler and LonGen.

sltk ships none of these files: pass the path of an official copy, or download one with
:func:`fetch`. Every loader returns plain dicts in file order, each with a stable ``id``, the
prompt under ``query`` (the key sltk's own prompt files use), the output language under ``lang``
and the length requirement (``length`` or ``constraint`` plus its accepted ``interval``).
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import records
from .constraints import BUCKETS, LONGEN_TYPES, bucket, parse_constraint  # noqa: F401  (part of this API)
from .text import LANGUAGES, check_lang

__all__ = [
    "BENCHMARKS",
    "BUCKETS",
    "BenchmarkError",
    "bucket",
    "fetch",
    "guess",
    "load",
    "load_longbench_write",
    "load_longen",
    "load_longwrite_ruler",
    "locate",
]


class BenchmarkError(ValueError):
    """A benchmark file that is missing, empty or malformed."""


@dataclass(frozen=True)
class Benchmark:
    """An official benchmark file: its name, id prefix, fields and where it is published."""

    name: str
    file: str
    prefix: str
    fields: tuple[str, ...]
    url: str


_LONGWRITER = "https://raw.githubusercontent.com/THUDM/LongWriter/ca6ccd4dec16696d1b8c449b12901c88d4cbf442/evaluation/"
_SELF_LENGTHEN = "https://raw.githubusercontent.com/QwenLM/Self-Lengthen/8ad5e9c2803b20ab96e6a8b802056e083cbf81c8/eval/"

BENCHMARKS = {
    b.name: b
    for b in (
        Benchmark("longbench_write", "longbench_write.jsonl", "lbw", ("prompt", "type", "length"),
                  _LONGWRITER + "longbench_write.jsonl"),
        Benchmark("longbench_write_en", "longbench_write_en.jsonl", "lbw-en", ("prompt", "type", "length"),
                  _LONGWRITER + "longbench_write_en.jsonl"),
        Benchmark("longwrite_ruler", "longwrite_ruler.jsonl", "ruler", ("prompt", "type", "length"),
                  _LONGWRITER + "longwrite_ruler.jsonl"),
        Benchmark("longen", "LonGen.jsonl", "longen", ("language", "range", "type", "constraint", "query"),
                  _SELF_LENGTHEN + "LonGen.jsonl"),
    )
}

_CJK = re.compile(r"[\u4e00-\u9fff]")


def _hint(bench: Benchmark | None) -> str:
    if bench is None:
        return "Benchmark files come from THUDM/LongWriter (evaluation/) and QwenLM/Self-Lengthen (eval/)."
    return (f"Get the official file with sltk.eval_sets.fetch({bench.name!r}, DEST) "
            f"or download it from {bench.url}")


def _by_file_name(path: Path) -> Benchmark | None:
    name = path.name.lower()
    for bench in BENCHMARKS.values():
        if bench.file.lower() == name:
            return bench
    return None


def _read_rows(path: str | os.PathLike, bench: Benchmark | None = None) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line; errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"{path}: no such file. {_hint(bench or _by_file_name(path))}")
    rows = records.numbered_objects(path, BenchmarkError, "invalid JSON ({msg}).")
    if not rows:
        raise BenchmarkError(f"{path}: the file is empty. {_hint(bench or _by_file_name(path))}")
    return rows


def _field(path, number: int, row: dict, name: str, kind: type):
    if name not in row:
        raise BenchmarkError(f"{path}:{number}: missing field {name!r} (fields present: {', '.join(row) or 'none'}).")
    value = row[name]
    # bool is an int subclass; a length of true is still a mistake
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BenchmarkError(f"{path}:{number}: field {name!r} must be {kind.__name__}, got {type(value).__name__} "
                             f"({value!r}).")
    if kind is str and not value.strip():
        raise BenchmarkError(f"{path}:{number}: field {name!r} is empty.")
    return value


def _is_en_subset(path: Path) -> bool:
    return Path(path).stem.lower().endswith("_en")


def load_longbench_write(path: str | os.PathLike, lang: str | None = None) -> list[dict]:
    """Load LongBench-Write (or its ``_en`` subset).

    Output language: ``lang`` when given; ``"en"`` for a file whose name ends in ``_en`` (one of
    its prompts is written in Chinese but asks for English); otherwise ``"zh"`` when the prompt
    contains a character in U+4E00–U+9FFF, else ``"en"``.
    """
    check_lang(lang, allow_none=True)
    path = Path(path)
    subset = _is_en_subset(path)
    bench = BENCHMARKS["longbench_write_en" if subset else "longbench_write"]
    items = _length_items(path, bench, lang or ("en" if subset else None))
    for item in items:
        item["bucket"] = bucket(item["length"])
    return items


def load_longwrite_ruler(path: str | os.PathLike, lang: str | None = None) -> list[dict]:
    """Load LongWrite-Ruler; the output language is ``lang`` or taken from the prompt's script."""
    check_lang(lang, allow_none=True)
    return _length_items(Path(path), BENCHMARKS["longwrite_ruler"], lang)


def _length_items(path: Path, bench: Benchmark, lang: str | None) -> list[dict]:
    items = []
    for i, (number, row) in enumerate(_read_rows(path, bench)):
        prompt = _field(path, number, row, "prompt", str)
        kind = _field(path, number, row, "type", str)
        length = _field(path, number, row, "length", int)
        if length <= 0:
            raise BenchmarkError(f"{path}:{number}: field 'length' must be positive, got {length}.")
        items.append({
            "id": f"{bench.prefix}-{i:03d}",
            "benchmark": bench.name,
            "lang": lang or ("zh" if _CJK.search(prompt) else "en"),
            "query": prompt,
            "type": kind,
            "length": length,
        })
    return items


def load_longen(path: str | os.PathLike) -> list[dict]:
    """Load LonGen; each item carries its ``constraint`` and the accepted ``interval`` (a, b) in words."""
    path = Path(path)
    items = []
    for i, (number, row) in enumerate(_read_rows(path, BENCHMARKS["longen"])):
        values = {name: _field(path, number, row, name, str)
                  for name in ("language", "range", "type", "constraint", "query")}
        if values["language"] not in LANGUAGES:
            raise BenchmarkError(f"{path}:{number}: field 'language' must be one of {', '.join(LANGUAGES)}, "
                                 f"got {values['language']!r}.")
        if values["type"] not in LONGEN_TYPES:
            raise BenchmarkError(f"{path}:{number}: field 'type' must be one of {', '.join(LONGEN_TYPES)}, "
                                 f"got {values['type']!r}.")
        try:
            interval = parse_constraint(values["constraint"], values["type"])
        except ValueError as exc:
            raise BenchmarkError(f"{path}:{number}: field 'constraint': {exc}") from exc
        items.append({
            "id": f"longen-{i:03d}",
            "benchmark": "longen",
            "lang": values["language"],
            "query": values["query"],
            "type": values["type"],
            "constraint": values["constraint"],
            "range": values["range"],
            "interval": interval,
        })
    return items


def guess(path: str | os.PathLike) -> str:
    """The benchmark name of a file: from its official file name, else from the fields of its first row."""
    path = Path(path)
    bench = _by_file_name(path)
    if bench is not None:
        return bench.name
    number, row = _read_rows(path)[0]
    if all(name in row for name in BENCHMARKS["longen"].fields):
        return "longen"
    if all(name in row for name in BENCHMARKS["longbench_write"].fields):
        if _is_en_subset(path):
            return "longbench_write_en"
        return "longwrite_ruler" if "ruler" in path.name.lower() else "longbench_write"
    raise BenchmarkError(f"{path}:{number}: cannot tell the benchmark from the fields {', '.join(row)}; expected "
                         f"prompt/type/length (LongBench-Write, LongWrite-Ruler) or "
                         f"language/range/type/constraint/query (LonGen).")


def locate(name: str, root: str | os.PathLike | None = None) -> Path:
    """The path of an official file in ``root`` (default: the SLTK_EVAL_SETS environment variable)."""
    bench = _benchmark(name)
    root = root if root is not None else os.environ.get("SLTK_EVAL_SETS")
    if root is None:
        raise BenchmarkError(f"no folder given for {bench.file}: pass root= or set SLTK_EVAL_SETS. {_hint(bench)}")
    return Path(root) / bench.file


def resolve(name_or_path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """A benchmark file: the path itself when it exists, else the official name looked up in `root`."""
    path = Path(name_or_path)
    if path.exists():
        return path
    if str(name_or_path).lower() not in BENCHMARKS and (path.suffix or len(path.parts) > 1):
        raise FileNotFoundError(f"{path} does not exist: give the path of a benchmark file, or one of the names "
                                f"{sorted(BENCHMARKS)} (looked up in $SLTK_EVAL_SETS).")
    found = locate(str(name_or_path), root)
    if not found.is_file():
        raise FileNotFoundError(f"{found} does not exist: put the official file there, or fetch it with "
                                f"sltk.eval_sets.fetch({str(name_or_path).lower()!r}, folder).")
    return found


def load(name_or_path: str | os.PathLike, lang: str | None = None, root: str | os.PathLike | None = None) -> list[dict]:
    """Load a benchmark from a file path, or by name from ``root`` / SLTK_EVAL_SETS.

    A path is dispatched on its file name or, failing that, on the fields of its first row.
    ``lang`` forces the output language (not for LonGen, which names it per row).
    """
    key = str(name_or_path).lower()
    if key in BENCHMARKS:
        path, name = locate(key, root), key
    else:
        path = Path(name_or_path)
        name = guess(path)
    if name == "longen":
        if lang is not None:
            raise ValueError("LonGen gives the language of every row; lang= cannot be forced.")
        return load_longen(path)
    if name == "longwrite_ruler":
        return load_longwrite_ruler(path, lang)
    return load_longbench_write(path, lang)


def _benchmark(name: str) -> Benchmark:
    key = name.lower()
    if key not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; valid: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[key]


def fetch(name: str, dest: str | os.PathLike, timeout: float = 60.0) -> Path:
    """Download an official benchmark file into ``dest`` (a folder, or a file path) and check that it loads."""
    bench = _benchmark(name)
    dest = Path(dest)
    target = dest / bench.file if dest.is_dir() or not dest.suffix else dest
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(bench.url, timeout=timeout) as response:
            data = response.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise BenchmarkError(f"could not download {bench.url} ({exc}). Without network access, download the file "
                             f"elsewhere and pass its path to sltk.eval_sets.load.") from exc
    tmp = target.with_name(target.name + ".part")
    tmp.write_bytes(data)
    try:
        _validate(tmp, bench)
    except BenchmarkError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)
    return target


def _validate(path: Path, bench: Benchmark) -> None:
    if bench.name == "longen":
        load_longen(path)
    else:
        _length_items(path, bench, None)
