"""float32 against bfloat16 weights on a real `cpu-demo` workload: speed and what the model writes.

The base model and the control arm (an untrained adapter) answer the 48 held-out prompts in one
shared batch, as notebook 03 does, once with `cpu-demo`'s float32 weights and bfloat16 KV cache and
once with bfloat16 weights; each in a run folder of its own, one after the other in this process.
Prints and writes results/weights_dtype.json: wall time, tokens/s, decode steps, finish reasons and
the held-out table of each. A killed run resumes from the answers already written.

    python benchmarks/weights_dtype.py [--folder runs/weights-dtype] [--prompts 48]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from generation import machine  # this folder's script, on the path when run as one

from sltk import heldout
from sltk.config import preset
from sltk.pipeline import Pipeline

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = {
    "float32": {"dtype": "float32"},  # cpu-demo's own: float32 weights, its bfloat16 KV cache
    "bfloat16": {"dtype": "bfloat16", "kv_cache_dtype": None},  # the cache in the weights' dtype
}


def measure(name: str, folder: Path, prompts: int) -> dict:
    config = preset("cpu-demo", name=f"weights-{name}", **{"eval.prompts": prompts}, **SETTINGS[name])
    pipe = Pipeline(config=config, folder=folder / name)
    started = time.perf_counter()
    table = heldout.evaluate(pipe)
    seconds = time.perf_counter() - started
    stats = pipe.backend.last_stats  # empty when every answer was already written (a resumed run)
    print(f"\n{name}: {seconds:.1f} s\n{table.to_string()}", flush=True)
    return {"settings": SETTINGS[name], "seconds": round(seconds, 1),
            **{k: stats.get(k) for k in ("tokens", "tokens_per_second", "decode_steps", "finish_reasons")},
            "table": table.round(4).to_dict(orient="records")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folder", default="runs/weights-dtype")
    p.add_argument("--prompts", type=int, default=48)
    args = p.parse_args()
    result = {"machine": machine(), "threads": torch.get_num_threads(), "prompts": args.prompts,
              "runs": {name: measure(name, Path(args.folder), args.prompts) for name in SETTINGS}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "weights_dtype.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
