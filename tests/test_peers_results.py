"""benchmarks/generation.py peers: runs of some engines or one workload add up to one results file."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "generation.py"


def _generation():
    spec = importlib.util.spec_from_file_location("bench_generation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peer_rows_from_separate_runs_merge_and_other_machines_replace():
    gen = _generation()
    here = gen.machine()
    saved = {"machine": here, "workloads": {"seeds": {"prompts": 64, "rows": {"a": {"x": 1}, "b": {"x": 2}}}},
             "skipped": ["serve: missing"]}
    new = {"machine": here, "workloads": {"seeds": {"prompts": 64, "rows": {"b": {"x": 3}}},
                                          "stage2": {"prompts": 48, "rows": {"c": {"x": 4}}}}, "skipped": []}
    merged = gen.merge_peers(saved, new)
    assert merged["workloads"]["seeds"]["rows"] == {"a": {"x": 1}, "b": {"x": 3}}
    assert merged["workloads"]["stage2"]["rows"] == {"c": {"x": 4}}
    assert merged["skipped"] == ["serve: missing"]
    elsewhere = {**new, "machine": "another CPU, 2 cores"}
    assert gen.merge_peers({**saved}, elsewhere) is elsewhere
    assert f"{os.cpu_count()} cores" in here
