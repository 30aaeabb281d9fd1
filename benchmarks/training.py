"""Training speed and peak memory: sltk's Trainer-based `train_role` against an older hand-written loop.

    python benchmarks/training.py --old-rev <git revision> [--records 'runs/demo/iter_*/sft_*.jsonl']
        [--epochs 2] [--repeats 2]

Both train the Generator role of the `cpu-demo` preset's model and LoRA (fresh adapters from the same
seed) on the same records, with `cpu-demo`'s train settings, each in a process of its own (so that
each peak resident memory is its own), alternating old and new `--repeats` times. The old loop is
`sltk/train.py` as it was at `--old-rev`, imported from git. The default records are what `make demo`
writes. Prints a markdown table and writes `benchmarks/results/training.json`.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _old_module(rev: str):
    """`sltk/train.py` at `rev`, imported as `sltk.train_at_rev` (its relative imports resolve in sltk)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:sltk/train.py"], check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "train_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("sltk.train_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _one(loop: str, rev: str, files: list[str], epochs: int) -> dict:
    """Train once in this process with the `old` or `new` loop; returns its measurements."""
    import dataclasses

    import sltk
    from sltk import records
    from sltk.models import peak_memory
    from sltk.pipeline import Pipeline

    module = _old_module(rev) if loop == "old" else __import__("sltk.train", fromlist=["train_role"])
    config = sltk.preset("cpu-demo", name="bench-training")
    data = [r for f in files for r in records.read_jsonl(Path(f))]
    with tempfile.TemporaryDirectory() as folder:
        pipeline = Pipeline(config, Path(folder) / "run", progress=False)
        pipeline.load_roles_of(0)
        settings = dataclasses.replace(config.train, epochs=epochs, seed=config.seed)
        start = time.perf_counter()
        stats = module.train_role(pipeline.loaded, "generator", data, Path(folder) / "generator", settings,
                                  resume=False, progress=False)
        wall = time.perf_counter() - start
    return {"loop": loop, "records": len(data), "steps": stats["steps"], "tokens": stats["tokens"],
            "wall_s": round(wall, 1), "tokens_per_s": round(stats["tokens"] / wall, 1),
            "final_loss": stats["final_loss"], "losses": stats["losses"], **peak_memory()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-rev", required=True, help="the git revision whose sltk/train.py is the old loop")
    parser.add_argument("--records", default="runs/demo/iter_*/sft_*.jsonl", help="a glob of chat-record JSONL files")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--one", choices=["old", "new"], help=argparse.SUPPRESS)  # a single measurement
    args = parser.parse_args()
    files = sorted(glob.glob(args.records))
    if not files:
        sys.exit(f"No records match {args.records!r}: run `make demo` first (it writes them), or give --records.")
    if args.one:
        print(json.dumps(_one(args.one, args.old_rev, files, args.epochs)))
        return

    rows = []
    for _ in range(args.repeats):
        for loop in ("old", "new"):
            cmd = [sys.executable, __file__, "--one", loop, "--old-rev", args.old_rev, "--records", args.records,
                   "--epochs", str(args.epochs)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(f"{loop}: {rows[-1]['tokens_per_s']} tok/s, {rows[-1]['wall_s']} s, "
                  f"peak {rows[-1]['process_gib']} GiB", flush=True)
    import platform

    summary = {}
    for loop in ("old", "new"):
        mine = [r for r in rows if r["loop"] == loop]
        summary[loop] = {"tokens_per_s": round(sum(r["tokens_per_s"] for r in mine) / len(mine), 1),
                         "peak_gib": max(r["process_gib"] for r in mine)}
    same = rows[0]["losses"] == rows[1]["losses"]  # the first old and the first new training
    result = {"command": " ".join(sys.argv), "machine": platform.processor() or platform.machine(),
              "records": files, "epochs": args.epochs, "rows": rows, "summary": summary,
              "new_over_old": round(summary["new"]["tokens_per_s"] / summary["old"]["tokens_per_s"], 3),
              "same_losses": same}
    out = ROOT / "benchmarks" / "results" / "training.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"\n{rows[0]['records']} records, {rows[0]['steps']} steps, {rows[0]['tokens']} tokens per training\n")
    print("| loop | tokens/s (mean of runs) | peak resident memory |\n|---|---|---|")
    for loop in ("old", "new"):
        print(f"| {loop} | {summary[loop]['tokens_per_s']} | {summary[loop]['peak_gib']} GiB |")
    print(f"\nnew/old speed: {result['new_over_old']}; identical per-step losses: {same}")


if __name__ == "__main__":
    main()
