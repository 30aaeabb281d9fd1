"""JSONL records: read with errors that name the file and line, append safely, write atomically.

Also the names a run gives its models' answer files: "base", "generator_iter_<k>".
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def read_jsonl(path: str | os.PathLike, repair_tail: bool = False) -> list[dict]:
    """Read one JSON object per line; a bad line raises ValueError naming the file and the line.

    With `repair_tail`, a last line cut short by a killed writer (no newline at its end) is
    removed from the file instead: it was never complete, so nothing is lost.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; check the path.")
    if repair_tail:
        _drop_torn_tail(path)
    return [record for _, record in numbered_objects(path)]


def numbered_objects(path: str | os.PathLike, error: type[Exception] = ValueError,
                     invalid: str = "not valid JSON ({msg}); fix or remove that line.") -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line; a bad line raises `error` naming file and line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path}:{number}: " + invalid.format(msg=exc.msg)) from exc
            if not isinstance(record, dict):
                raise error(f"{path}:{number}: expected a JSON object, got {type(record).__name__}.")
            rows.append((number, record))
    return rows


def read_prompts(path: str | os.PathLike) -> list[dict]:
    """The prompts of a seeds or held-out file ({"id", "query", "lang"} a line), checked: the file holds
    some, each has a non-empty `query` and a known `lang`, and no id or query comes twice. A problem
    raises ValueError naming the file, the line and the fix."""
    from .text import LANGUAGES

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; check the path (seeds, held_out).")
    rows = numbered_objects(path)
    if not rows:
        raise ValueError(f"{path}: no prompts in it; give one {{\"id\": ..., \"query\": ...}} object a line.")
    ids: dict[str, int] = {}
    queries: dict[str, int] = {}
    for number, r in rows:
        query = r.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"{path}:{number}: needs a non-empty \"query\" string, got {query!r}.")
        lang = r.get("lang", "en")
        if lang not in LANGUAGES:
            raise ValueError(f"{path}:{number}: \"lang\" {lang!r} is not one of {list(LANGUAGES)}.")
        rid = r.get("id")
        if rid is not None and rid in ids:
            raise ValueError(f"{path}:{number}: id {rid!r} is already used on line {ids[rid]}; ids must be unique.")
        key = " ".join(query.split()).lower()
        if key in queries:
            raise ValueError(f"{path}:{number}: the same query as line {queries[key]}; remove one of them.")
        ids[rid] = number
        queries[key] = number
    return [r for _, r in rows]


def _drop_torn_tail(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def append_jsonl(path: str | os.PathLike, records) -> None:
    """Append records, one JSON object per line, flushed to disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_json(path: str | os.PathLike, data) -> None:
    """Write JSON atomically (temp file, then rename), so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    os.replace(tmp, path)


def write_jsonl(path: str | os.PathLike, records) -> None:
    """Write a whole JSONL file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def model_name(k: int) -> str:
    """The name of iteration k's Generator ("base" for k = 0), as in `eval/<name>.jsonl`."""
    return f"generator_iter_{k}" if k else "base"


def model_iteration(name: str) -> int:
    """The iteration of a model name: 0 for "base", k for "generator_iter_<k>"."""
    return 0 if name == "base" else int(name.rsplit("_", 1)[1])
