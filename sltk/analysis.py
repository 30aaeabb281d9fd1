"""Length statistics and tables of a run (pandas)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from . import records


def describe(values: list[float]) -> dict:
    """n, mean, median, p90, min and max of a list of numbers (zeros when empty)."""
    if not values:
        return {"n": 0, "mean": 0.0, "median": 0.0, "p90": 0.0, "min": 0, "max": 0}
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return {"n": len(values), "mean": round(statistics.fmean(values), 1), "median": statistics.median(values),
            "p90": p90, "min": ordered[0], "max": ordered[-1]}


def _read(path: Path) -> list[dict]:
    return records.read_jsonl(path) if path.exists() else []


def _filter_report(rows: list[dict]) -> dict:
    """Per filter: how many tries it rejected, and the pass rate over all tries."""
    tries = sum(r.get("tries", 1) for r in rows)
    rejected: dict[str, int] = {}
    for r in rows:
        for name, n in r.get("rejected", {}).items():
            rejected[name] = rejected.get(name, 0) + n
    return {"tries": tries, "rejected": rejected,
            "pass_rate": {name: round(1 - n / tries, 3) for name, n in rejected.items()} if tries else {}}


def _steps(folder: Path) -> dict:
    """The finished steps in a run folder's manifest."""
    manifest = Path(folder) / "manifest.json"
    return json.loads(manifest.read_text()).get("steps", {}) if manifest.exists() else {}


def iteration_stats(folder: str | Path, k: int) -> dict:
    """Counts in and out of every step, filter pass rates, lengths, growth and times of a run's iteration k."""
    d = Path(folder) / f"iter_{k}"
    queries = _read(d / "queries.jsonl")
    qstats = json.loads((d / "queries.stats.json").read_text()) if (d / "queries.stats.json").exists() else {}
    rounds = qstats.get("by_round", [])
    judged = sum(r["judged"] for r in rounds)
    drafts, extended = _read(d / "drafts.jsonl"), _read(d / "extended.jsonl")
    ok_drafts = [r for r in drafts if r["ok"]]
    ok_ext = [r for r in extended if r["ok"]]
    steps = {key.split("/", 1)[1]: v.get("seconds") for key, v in _steps(folder).items()
             if key.startswith(f"iter_{k}/")}
    micro = [m for r in extended for m in r.get("rounds", [])]
    return {
        "iteration": k,
        "queries": {
            "accepted": len(queries),
            "candidates": sum(r["candidates"] for r in rounds),
            "rejected_bounds": sum(r["bounds"] for r in rounds),
            "rejected_empty": sum(r["empty"] for r in rounds),
            "rejected_duplicates": sum(r["duplicates"] for r in rounds),
            "judged": judged,
            "judge_yes_rate": round(sum(r["judged_yes"] for r in rounds) / judged, 3) if judged else None,
            "judge_unclear": sum(r["judge_unclear"] for r in rounds),
        },
        "drafts": {
            "items": len(drafts), "ok": len(ok_drafts), **_filter_report(drafts),
            "words": describe([r["words"] for r in ok_drafts]),
            "tokens": describe([r["tokens"] for r in ok_drafts]),
        },
        "extension": {
            "attempts": len(extended), "ok": len(ok_ext),
            "acceptance_rate": round(len(ok_ext) / len(extended), 3) if extended else None,
            "micro_rounds": len(micro),
            "micro_round_acceptance": round(sum(m["accepted"] for m in micro) / len(micro), 3) if micro else None,
            "micro_round_failures": _count(f for m in micro for f in m["failed"]),
            # accepted after cutting back to a clean start (extend.salvage)
            "micro_rounds_salvaged": sum(1 for m in micro if m["accepted"] and m["failed"]),
            "words": describe([r["words"] for r in ok_ext]),
            "draft_words": describe([r["draft_words"] for r in ok_ext]),
            "growth": describe([round(r["growth"], 3) for r in ok_ext]),
            **_filter_report(extended),
        },
        "sft_records": len(_read(d / "sft_generator.jsonl")),
        "seconds": steps,
    }


def _count(items) -> dict:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


def markdown(table) -> str:
    """A DataFrame as a GitHub markdown table."""
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def iteration_table(stats: list[dict]):
    """One row per iteration: counts through the steps, acceptance, growth and minutes per step."""
    import pandas as pd

    rows = []
    for s in stats:
        q, d, e = s["queries"], s["drafts"], s["extension"]
        rows.append({
            "iter": s["iteration"], "queries": q["accepted"], "judge_yes": q["judge_yes_rate"],
            "drafts_ok": f"{d['ok']}/{d['items']}", "draft_words": d["words"]["mean"],
            "ext_ok": f"{e['ok']}/{e['attempts']}", "ext_rate": e["acceptance_rate"],
            "growth": e["growth"]["mean"], "ext_words": e["words"]["mean"], "sft": s["sft_records"],
            "minutes": round(sum(v or 0 for v in s["seconds"].values()) / 60, 1),
        })
    return pd.DataFrame(rows)


def query_log(folder: str | Path, k: int):
    """Every self-instruct candidate of a run's iteration k with its round and outcome (a DataFrame)."""
    import pandas as pd

    path = Path(folder) / f"iter_{k}" / "queries.stats.json"
    rounds = json.loads(path.read_text())["by_round"] if path.exists() else []
    return pd.DataFrame([{"round": r["round"], **e} for r in rounds for e in r.get("log", [])],
                        columns=["round", "query", "outcome"])


def accepted_extensions(folder: str | Path, iterations: int):
    """The accepted extensions of a run's iterations 1..`iterations` so far, with their iteration (a DataFrame)."""
    import pandas as pd

    rows = [{"iteration": k, **r} for k in range(1, iterations + 1)
            for r in _read(Path(folder) / f"iter_{k}" / "extended.jsonl") if r["ok"]]
    return pd.DataFrame(rows, columns=["iteration", "growth", "words", "draft_words"] if not rows else None)


def data_both_ways(folder: str | Path, iterations: int) -> tuple:
    """Self-Lengthen's accepted extensions (iterations 1..`iterations`) beside AgentWrite's passing
    texts, from a run folder: a one-row-per-method table (texts kept, pass rate, mean words,
    generation seconds, kept words per second) and the kept records of each, for plots."""
    import pandas as pd

    folder = Path(folder)
    steps = _steps(folder)
    extended = [r for k in range(1, iterations + 1) for r in _read(folder / f"iter_{k}" / "extended.jsonl")]
    texts = _read(folder / "agentwrite" / "texts.jsonl")
    kept = {"Self-Lengthen": [r for r in extended if r.get("ok")], "AgentWrite": [t for t in texts if t.get("ok")]}
    seconds = {
        "Self-Lengthen": sum(steps.get(f"iter_{k}/{s}", {}).get("seconds", 0.0)
                             for k in range(1, iterations + 1) for s in ("drafts", "extended")),
        "AgentWrite": steps.get("agentwrite/data", {}).get("seconds", 0.0),
    }
    tried = {"Self-Lengthen": len(extended), "AgentWrite": len(texts)}
    rows = []
    for method, ok in kept.items():
        words = sum(r["words"] for r in ok)
        rows.append({"method": method, "texts kept": len(ok), "tried": tried[method],
                     "pass rate": round(len(ok) / max(tried[method], 1), 3),
                     "mean words": round(words / max(len(ok), 1), 1), "generation s": round(seconds[method]),
                     "kept words / s": round(words / max(seconds[method], 1e-9), 2)})
    return pd.DataFrame(rows), kept
