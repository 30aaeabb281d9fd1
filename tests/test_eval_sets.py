"""Benchmark loaders: the official files (when present), dispatch, buckets and malformed files."""

import json
import os
import re
import urllib.error
from collections import Counter
from pathlib import Path

import pytest

from sltk import eval_sets
from sltk.eval_sets import BenchmarkError, bucket, load, load_longbench_write, load_longen, load_longwrite_ruler

CJK = re.compile(r"[\u4e00-\u9fff]")


def official_files() -> Path:
    """The folder of official benchmark files: SLTK_EVAL_SETS, else ../shared/eval_sets beside the repository."""
    root = Path(os.environ.get("SLTK_EVAL_SETS") or Path(__file__).resolve().parents[2] / "shared" / "eval_sets")
    if not (root / "longbench_write.jsonl").is_file():
        pytest.skip(f"official benchmark files not found in {root} (set SLTK_EVAL_SETS to their folder)")
    return root


def write_rows(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


LBW_ROWS = [
    {"prompt": "Write a 300-word note about tea.", "type": "Functional Writing", "length": 300},
    {"prompt": "写一篇两千字的散文", "type": "Literature and Creative Writing", "length": 2000},
]
LONGEN_ROWS = [
    {"language": "en", "range": "2-4k", "type": "about", "constraint": "around 2000 words", "query": "Write... 2000."},
    {"language": "zh", "range": "2-4k", "type": "range", "constraint": "2000字至3000字", "query": "请写……"},
]


# --------------------------------------------------------------------------- official files


def test_longbench_write_official():
    items = load_longbench_write(official_files() / "longbench_write.jsonl")
    assert len(items) == 120
    assert [it["id"] for it in items[:2]] == ["lbw-000", "lbw-001"]
    assert len({it["id"] for it in items}) == 120
    assert Counter(it["bucket"] for it in items) == {"[0,500)": 26, "[500,2000)": 36, "[2000,4000)": 31,
                                                      "[4000,20000]": 27}
    for it in items:
        assert it["lang"] == ("zh" if CJK.search(it["query"]) else "en")
        assert it["length"] > 0 and it["type"] and it["benchmark"] == "longbench_write"
    langs = Counter(it["lang"] for it in items)
    assert 50 <= langs["zh"] <= 70 and 50 <= langs["en"] <= 70


def test_longbench_write_en_subset_is_english():
    items = load_longbench_write(official_files() / "longbench_write_en.jsonl")
    assert len(items) == 60
    assert {it["lang"] for it in items} == {"en"}
    assert items[0]["id"] == "lbw-en-000" and items[0]["benchmark"] == "longbench_write_en"
    # the subset holds a prompt written in Chinese that asks for English
    assert any(CJK.search(it["query"]) for it in items)


def test_ruler_official():
    items = load_longwrite_ruler(official_files() / "longwrite_ruler.jsonl")
    assert len(items) == 48
    assert Counter(it["length"] for it in items) == {n: 8 for n in (1000, 2000, 5000, 10000, 20000, 30000)}
    assert Counter(it["lang"] for it in items) == {"en": 24, "zh": 24}
    assert items[0]["id"] == "ruler-000"


def test_longen_official():
    items = load_longen(official_files() / "LonGen.jsonl")
    assert len(items) == 240
    assert Counter(it["lang"] for it in items) == {"en": 120, "zh": 120}
    assert Counter(it["type"] for it in items) == {t: 60 for t in ("about", "range", "above", "below")}
    assert all(0 < it["interval"][0] <= it["interval"][1] for it in items)
    assert items[0]["id"] == "longen-000" and items[-1]["id"] == "longen-239"


def test_load_by_name_and_path():
    root = official_files()
    assert len(load("longbench_write", root=root)) == 120
    assert len(load("LonGen", root=root)) == 240
    assert len(load(root / "longwrite_ruler.jsonl")) == 48
    assert {it["lang"] for it in load(root / "longbench_write_en.jsonl")} == {"en"}


# --------------------------------------------------------------------------- dispatch and languages


def test_lang_detection_and_forcing(tmp_path):
    path = write_rows(tmp_path / "lbw.jsonl", LBW_ROWS)
    assert [it["lang"] for it in load_longbench_write(path)] == ["en", "zh"]
    assert [it["lang"] for it in load_longbench_write(path, lang="en")] == ["en", "en"]
    with pytest.raises(ValueError, match="unknown language"):
        load_longbench_write(path, lang="fr")


def test_en_file_name_means_english(tmp_path):
    path = write_rows(tmp_path / "my_longbench_write_en.jsonl", LBW_ROWS)
    items = load_longbench_write(path)
    assert [it["lang"] for it in items] == ["en", "en"]
    assert items[1]["id"] == "lbw-en-001"


def test_guess_from_fields(tmp_path):
    lbw = write_rows(tmp_path / "a.jsonl", LBW_ROWS)
    longen = write_rows(tmp_path / "b.jsonl", LONGEN_ROWS)
    ruler = write_rows(tmp_path / "my_ruler.jsonl", LBW_ROWS)
    assert eval_sets.guess(lbw) == "longbench_write"
    assert eval_sets.guess(longen) == "longen"
    assert eval_sets.guess(ruler) == "longwrite_ruler"
    assert load(ruler)[0]["id"] == "ruler-000"
    got = load(longen)
    assert got[0]["interval"] == pytest.approx((1600, 2400))
    assert got[1]["interval"] == (2000, 3000) and got[1]["lang"] == "zh"
    with pytest.raises(ValueError, match="LonGen"):
        load(longen, lang="en")
    other = write_rows(tmp_path / "c.jsonl", [{"question": "x"}])
    with pytest.raises(BenchmarkError, match=r"c\.jsonl:1: cannot tell"):
        load(other)


def test_locate_needs_a_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("SLTK_EVAL_SETS", raising=False)
    with pytest.raises(BenchmarkError, match="SLTK_EVAL_SETS"):
        load("longbench_write")
    monkeypatch.setenv("SLTK_EVAL_SETS", str(tmp_path))
    assert eval_sets.locate("longen") == tmp_path / "LonGen.jsonl"
    with pytest.raises(ValueError, match="unknown benchmark"):
        eval_sets.locate("mmlu")


def test_bucket_edges():
    assert [bucket(n) for n in (0, 499, 500, 1999, 2000, 3999, 4000, 20000)] == [
        "[0,500)", "[0,500)", "[500,2000)", "[500,2000)", "[2000,4000)", "[2000,4000)", "[4000,20000]",
        "[4000,20000]"]
    assert bucket(30000) == ">20000"
    with pytest.raises(ValueError):
        bucket(-1)


# --------------------------------------------------------------------------- malformed files


def test_missing_file_hints_at_the_source(tmp_path):
    with pytest.raises(BenchmarkError, match=r"longbench_write\.jsonl: no such file.*fetch\('longbench_write'"):
        load_longbench_write(tmp_path / "longbench_write.jsonl")
    with pytest.raises(BenchmarkError, match="QwenLM/Self-Lengthen"):
        load_longen(tmp_path / "LonGen.jsonl")


@pytest.mark.parametrize("rows, match", [
    ([], "empty"),
    (["", "   "], "empty"),
    ([LBW_ROWS[0], "{not json"], r":2: invalid JSON"),
    ([LBW_ROWS[0], "[1, 2]"], r":2: expected a JSON object, got list"),
    ([LBW_ROWS[0], LBW_ROWS[1], {"prompt": "x", "type": "t"}], r":3: missing field 'length'"),
    ([{"prompt": "x", "type": "t", "length": "2000"}], r":1: field 'length' must be int, got str"),
    ([{"prompt": "x", "type": "t", "length": True}], r":1: field 'length' must be int, got bool"),
    ([{"prompt": "x", "type": "t", "length": 2000.0}], r":1: field 'length' must be int, got float"),
    ([{"prompt": 5, "type": "t", "length": 100}], r":1: field 'prompt' must be str"),
    ([{"prompt": "  ", "type": "t", "length": 100}], r":1: field 'prompt' is empty"),
    (["", {"prompt": "x", "type": "t", "length": 0}], r":2: field 'length' must be positive, got 0"),
    ([{"prompt": "x", "type": "t", "length": -5}], r":1: field 'length' must be positive"),
])
def test_malformed_length_files(tmp_path, rows, match):
    path = write_rows(tmp_path / "bench.jsonl", rows)
    with pytest.raises(BenchmarkError, match=match) as info:
        load_longbench_write(path)
    assert str(path) in str(info.value)
    with pytest.raises(BenchmarkError, match=match):
        load_longwrite_ruler(path)


@pytest.mark.parametrize("change, match", [
    ({"language": "fr"}, r":2: field 'language' must be one of en, zh"),
    ({"type": "exactly"}, r":2: field 'type' must be one of"),
    ({"constraint": "long"}, r":2: field 'constraint'"),
    ({"range": 3}, r":2: field 'range' must be str"),
    ({"query": None}, r":2: field 'query' must be str"),
])
def test_malformed_longen(tmp_path, change, match):
    path = write_rows(tmp_path / "LonGen.jsonl", [LONGEN_ROWS[0], {**LONGEN_ROWS[1], **change}])
    with pytest.raises(BenchmarkError, match=match):
        load_longen(path)


def test_longen_missing_field(tmp_path):
    row = dict(LONGEN_ROWS[0])
    del row["constraint"]
    path = write_rows(tmp_path / "LonGen.jsonl", [row])
    with pytest.raises(BenchmarkError, match=r"LonGen\.jsonl:1: missing field 'constraint'"):
        load_longen(path)


# --------------------------------------------------------------------------- fetch (no network: urlopen is replaced)


class FakeResponse:
    def __init__(self, data: bytes):
        self.data = data

    def read(self):
        return self.data

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_fetch_writes_and_checks(monkeypatch, tmp_path):
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in LBW_ROWS).encode()
    urls = []
    monkeypatch.setattr(eval_sets.urllib.request, "urlopen",
                        lambda url, timeout: urls.append(url) or FakeResponse(body))
    path = eval_sets.fetch("longbench_write", tmp_path)
    assert path == tmp_path / "longbench_write.jsonl"
    assert urls == [eval_sets.BENCHMARKS["longbench_write"].url]
    assert urls[0].startswith("https://raw.githubusercontent.com/THUDM/LongWriter/")
    assert urls[0].endswith("/evaluation/longbench_write.jsonl")
    assert len(load(path)) == 2


def test_fetch_rejects_a_bad_download(monkeypatch, tmp_path):
    monkeypatch.setattr(eval_sets.urllib.request, "urlopen", lambda url, timeout: FakeResponse(b"<html>"))
    with pytest.raises(BenchmarkError, match="invalid JSON"):
        eval_sets.fetch("longen", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_fetch_offline(monkeypatch, tmp_path):
    def offline(url, timeout):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(eval_sets.urllib.request, "urlopen", offline)
    with pytest.raises(BenchmarkError, match="could not download .*Self-Lengthen.*LonGen.jsonl"):
        eval_sets.fetch("longen", tmp_path / "LonGen.jsonl")
    with pytest.raises(ValueError, match="unknown benchmark"):
        eval_sets.fetch("nope", tmp_path)


def test_official_urls():
    urls = {name: b.url for name, b in eval_sets.BENCHMARKS.items()}
    assert urls["longen"].startswith("https://raw.githubusercontent.com/QwenLM/Self-Lengthen/")
    assert urls["longen"].endswith("/eval/LonGen.jsonl")
    for name in ("longbench_write_en", "longwrite_ruler"):
        assert urls[name].endswith(f"/evaluation/{name}.jsonl")


def test_a_benchmark_path_that_does_not_exist_is_named(tmp_path):
    from sltk.eval_sets import resolve

    with pytest.raises(FileNotFoundError, match="missing.jsonl does not exist: give the path of a benchmark file"):
        resolve(tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError, match="LonGen.jsonl does not exist: put the official file there"):
        resolve("longen", root=tmp_path)
