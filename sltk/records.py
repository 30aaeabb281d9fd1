"""JSONL records: read with errors that name the file, the line and the fix, append safely, write
atomically, and set damaged lines aside (`repair`).

Also the names a run gives its models' answer files: "base", "generator_iter_<k>".
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from . import faults

log = logging.getLogger("sltk")

_TEXT = {"id": str, "query_id": str, "query": str, "lang": str, "ok": bool, "text": str}
_MESSAGES = {"messages": list}
#: The fields a run's own files must hold, by file name, with their types. A record without one of
#: them (or of another type) is damaged: it is named on reading and set aside by `repair`.
FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "queries.jsonl": {"id": str, "query": str, "lang": str},
    "drafts.jsonl": _TEXT,
    "harvest.jsonl": _TEXT,
    "extended.jsonl": {**_TEXT, "draft_id": str, "draft": str, "growth": (int, float), "rounds": list},
    "sft_generator.jsonl": _MESSAGES,
    "sft_extender.jsonl": _MESSAGES,
    "dataset.jsonl": _MESSAGES,
    "plans.jsonl": {"id": str, "steps": list, "ok": bool},
    "sections.jsonl": {"id": str, "query_id": str, "step": int, "text": str, "empty": bool},
    "texts.jsonl": {"id": str, "query": str, "text": str, "ok": bool},
    ".tries.jsonl": {"id": str, "failed": list},
}
#: The fields of a model's answers (`eval/<model>.jsonl`, `bench/.../<model>.jsonl`).
ANSWER_FIELDS = {"id": str, "text": str, "words": int}


def fields_of(path: str | os.PathLike) -> dict | None:
    """The fields a file of a run must hold, by its name and place, or None for a file sltk does not know:
    the step files by name, a model's answers in `eval/` and `bench/<benchmark>/` (not the judge's)."""
    path = Path(path)
    if path.name.endswith(".tries.jsonl"):
        return FIELDS[".tries.jsonl"]
    if path.name in FIELDS:
        return FIELDS[path.name]
    answers = path.parent.name == "eval" or path.parent.parent.name == "bench"
    return ANSWER_FIELDS if answers and ".judge" not in path.name else None


def run_folder_of(path: str | os.PathLike) -> Path | None:
    """The run folder (the one with manifest.json) that holds `path`, if any."""
    for parent in Path(path).resolve().parents:
        if (parent / "manifest.json").is_file():
            return parent
    return None


def _fix(path: Path) -> str:
    run = run_folder_of(path)
    if run is None:
        return "fix or remove that line."
    where = "" if run.parent == Path("runs").resolve() else f" --runs-dir {run.parent}"
    return (f"fix or remove that line, or set every damaged line aside with `sltk repair --name {run.name}{where}`; "
            "the step that wrote a missing record writes it again when the run resumes.")


def problem(record, fields: dict | None) -> str | None:
    """What is wrong with one parsed line, or None: not an object, a field missing or of another type."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    for name, kind in (fields or {}).items():
        if name not in record:
            return f"the record has no \"{name}\""
        value = record[name]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int, float))):
            want = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            return f"\"{name}\" is {type(value).__name__}, expected {want}"
    return None


def read_jsonl(path: str | os.PathLike, repair_tail: bool = False, fields: dict | None = None) -> list[dict]:
    """Read one JSON object per line; a bad line raises ValueError naming the file, the line and the fix.

    A line is bad when it is not JSON, not an object, or lacks one of `fields` (by default those
    `FIELDS` gives for the file's name). With `repair_tail`, a last line cut short by a killed writer
    (no newline at its end) is removed from the file instead, said once: it was never complete, and
    the step that wrote it writes it again.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; check the path.")
    if repair_tail:
        _drop_torn_tail(path)
    return [record for _, record in numbered_objects(path, fields=fields_of(path) if fields is None else fields)]


def numbered_objects(path: str | os.PathLike, error: type[Exception] = ValueError,
                     invalid: str | None = None, fields: dict | None = None) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line; a bad line raises `error` naming file and line."""
    path = Path(path)
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                why = (invalid or "not valid JSON ({msg}); {fix}").format(msg=exc.msg, fix=_fix(path))
                raise error(f"{path}:{number}: {why}") from exc
            wrong = problem(record, fields)
            if wrong:
                raise error(f"{path}:{number}: {wrong}; " + (_fix(path) if fields else "fix or remove that line."))
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
    # ids name records and files downstream: always strings
    return [{**r, "id": str(r["id"])} if r.get("id") is not None else r for _, r in rows]


def _drop_torn_tail(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(keep)
        log.warning("%s: removed a last line cut short (%d bytes, a write that was killed); "
                    "its record is written again.", path, len(data) - keep)


def repair(folder: str | os.PathLike) -> dict[str, int]:
    """Set aside every damaged line of a run's JSONL files: each moves to `<file>.damaged` and the file
    keeps its good lines, byte for byte. A step whose file is now short writes the missing records
    again when the run resumes. Returns {file: lines set aside} for the files that had some."""
    folder = Path(folder)
    moved = {}
    for path in sorted(folder.rglob("*.jsonl")):
        fields = fields_of(path) or {}
        lines = path.read_bytes().splitlines(keepends=True)
        good, bad = [], []
        for line in lines:
            if not line.strip():
                continue
            try:
                wrong = problem(json.loads(line), fields) if line.endswith(b"\n") else "cut short"
            except (json.JSONDecodeError, UnicodeDecodeError):
                wrong = "not JSON"
            (bad if wrong else good).append(line)
        if bad:
            with open(path.with_name(path.name + ".damaged"), "ab") as f:
                f.writelines(line if line.endswith(b"\n") else line + b"\n" for line in bad)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(b"".join(good))
            os.replace(tmp, path)
            moved[str(path.relative_to(folder))] = len(bad)
    return moved


def count(path: str | os.PathLike) -> int:
    """The number of complete, non-blank lines of a file (0 when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return 0
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip() and line.endswith(b"\n"))


def append_jsonl(path: str | os.PathLike, records) -> None:
    """Append records, one JSON object per line, flushed to disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(record, ensure_ascii=False) + "\n" for record in records]
    fault = faults.due(path.name, len(lines)) if lines else None
    if fault == "torn":  # a write killed halfway through its last line
        lines[-1] = lines[-1][: len(lines[-1]) // 2]
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(lines))
        f.flush()
        os.fsync(f.fileno())
    if fault:
        faults.kill()


def write_json(path: str | os.PathLike, data) -> None:
    """Write JSON atomically (temp file, then rename), so a reader never sees half a file."""
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False))


def chunks(items: list, size: int):
    """`items` in pieces of `size`: a step generates and appends one piece at a time, so a kill loses
    at most the piece in flight."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def write_jsonl(path: str | os.PathLike, records) -> None:
    """Write a whole JSONL file atomically."""
    write_atomic(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file through a temporary file and a rename: the old file, or the whole new one,
    never half of either. A failed write (a full disk) removes its temporary file and raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename: a lost machine leaves the old file, not an empty one
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    faults.point(path.name)
    os.replace(tmp, path)


def model_name(k: int) -> str:
    """The name of iteration k's Generator ("base" for k = 0), as in `eval/<name>.jsonl`."""
    return f"generator_iter_{k}" if k else "base"


def is_iteration_model(name: str) -> bool:
    """Whether `name` is an iteration's Generator ("generator_iter_<k>")."""
    prefix, _, k = name.rpartition("_")
    return prefix == "generator_iter" and k.isdigit()


def model_iteration(name: str) -> int:
    """The iteration of a model name: 0 for "base", k for "generator_iter_<k>"."""
    return 0 if name == "base" else int(name.rsplit("_", 1)[1])
