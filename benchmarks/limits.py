"""How close sltk's generation comes to what this CPU allows, and where the rest of a decode step goes.

    python benchmarks/limits.py                     # float32 KV cache (sltk's default)
    python benchmarks/limits.py --kv bfloat16       # cpu-demo's bfloat16 KV cache

In one process:
- the CPU's reach: FLOP/s of a plain large float32 matmul and bytes/s of a large memory copy;
- sltk's `HFBackend` decoding at each batch size and context (every row writes exactly the same number
  of tokens, so the batch stays full): milliseconds per step, and the matrix FLOP/s and bytes/s that
  step achieves (the weights are read once per step, the KV cache once per row);
- prefill of the long prompts: prompt tokens/s and FLOP/s;
- a torch.profiler pass over the same decode that splits each step into the model's matrix products,
  attention over the cache, the cache append, the model's other ops, the Python of the model's code,
  sampling, the per-row bookkeeping and cache selection, and the loop's own Python.

FLOPs and bytes come from the model's shapes (`model_shape`), not from counters. Results are printed as
markdown tables and saved to benchmarks/results/limits-<kv>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch
from generation import long_requests, machine, seed_requests

import sltk
from sltk import backends
from sltk.backends import HFBackend
from sltk.chat import ChatRequest, Sampling

HERE = Path(__file__).resolve().parent


def matmul_flops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def copy_bytes(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes moved per second by a large tensor copy (each copy reads and writes the buffer once)."""
    src = torch.empty(megabytes * 2**20 // 4)
    src.fill_(1.0)
    dst = torch.empty_like(src)
    dst.copy_(src)
    start = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    return 2 * src.numel() * 4 * repeats / (time.perf_counter() - start)


def model_shape(model) -> dict:
    """What one token costs: matrix weights (and their bytes), and the attention and KV sizes per layer."""
    c = model.config
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    params = sum(m.weight.numel() for m in linear)
    head = model.get_output_embeddings().weight.numel()
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return {
        "matrix_params": params,  # includes the output head (tied to the embeddings here)
        "head_params": head,
        "weight_bytes": sum(m.weight.numel() * m.weight.element_size() for m in linear),
        "layers": c.num_hidden_layers,
        "q_width": c.num_attention_heads * head_dim,
        "kv_width": c.num_key_value_heads * head_dim,
    }


def decode_cost(shape: dict, batch: int, context: float, kv_bytes: int) -> tuple[float, float]:
    """FLOPs and bytes of one decode step: every matrix once per row, attention over `context` tokens,
    the weights read once and each row's cache read once."""
    flops = batch * (2 * shape["matrix_params"] + 4 * shape["layers"] * shape["q_width"] * context)
    cache = batch * context * shape["layers"] * 2 * shape["kv_width"] * kv_bytes
    return flops, shape["weight_bytes"] + cache


def prefill_flops(shape: dict, lengths: list[int]) -> float:
    body = 2 * (shape["matrix_params"] - shape["head_params"])
    causal = sum(4 * shape["layers"] * shape["q_width"] * n * (n + 1) / 2 for n in lengths)
    return sum(lengths) * body + causal + len(lengths) * 2 * shape["head_params"]


@contextmanager
def timing(backend: HFBackend, record: dict):
    """Time the backend's prefill separately from the rest of a generate call."""
    original = backend._prefill

    def prefill(*args, **kwargs):
        start = time.perf_counter()
        out = original(*args, **kwargs)
        record["prefill_s"] = record.get("prefill_s", 0.0) + time.perf_counter() - start
        return out

    backend._prefill = prefill  # an instance attribute over the class's method
    try:
        yield
    finally:
        del backend._prefill


def run_decode(backend: HFBackend, requests, tokens: int) -> dict:
    fixed = [ChatRequest(r.messages, id=r.id, max_new_tokens=tokens, min_new_tokens=tokens) for r in requests]
    sampling = Sampling(max_new_tokens=tokens, stop=(), loop_tokens=0)
    record: dict = {}
    with timing(backend, record):
        start = time.perf_counter()
        out = backend.generate(fixed, sampling, seed=0)
        record["wall_s"] = time.perf_counter() - start
    record["steps"] = backend.last_stats["decode_steps"]
    record["prompt_tokens"] = [c.prompt_tokens for c in out]
    record["decode_s"] = record["wall_s"] - record["prefill_s"]
    return record


# -- the profile ---------------------------------------------------------------------------------
PHASES = {  # what is wrapped, under which name (and the model's forward, as "forward")
    "prefill": (HFBackend, "_prefill"), "sampling": (HFBackend, "_next_tokens"), "rows": (HFBackend, "_finished"),
    "cache select": (backends, "_select"), "cache append": (backends.GrowingLayer, "update"),
}


@contextmanager
def phases(backend: HFBackend):
    """Mark each phase of the decode loop with a profiler range."""
    from torch.profiler import record_function

    def marked(name, fn):
        def wrapper(*args, **kwargs):
            with record_function(f"sltk.{name}"):
                return fn(*args, **kwargs)
        return wrapper

    saved = []
    for name, (owner, attr) in PHASES.items():
        saved.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, marked(name, getattr(owner, attr)))
    model = backend.loaded.model
    model.forward = marked("forward", model.forward)  # an instance attribute over the class's method
    try:
        yield
    finally:
        del model.forward
        for owner, attr, fn in saved:
            setattr(owner, attr, fn)


def _kind(names: list[str]) -> str:
    """An op's kind, from its name and those of the ops it runs inside (innermost first)."""
    if any("scaled_dot_product" in n for n in names):
        return "attention"
    if names[0] in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"):
        return "matrix products"
    return "other ops"


def profile_decode(backend: HFBackend, requests, tokens: int) -> dict:
    """ms per decode step in each part, from one profiled generate call (the prefill excluded)."""
    from torch.profiler import ProfilerActivity, profile

    with phases(backend), profile(activities=[ProfilerActivity.CPU]) as prof:
        record = run_decode(backend, requests, tokens)
    split: dict[str, float] = defaultdict(float)
    for e in prof.events():
        marks, names, up = [], [], e
        while up is not None:
            names.append(up.name)
            if up.name.startswith("sltk."):
                marks.append(up.name[5:])
            up = up.cpu_parent
        if "prefill" in marks:
            continue  # the prefill is timed on its own
        if e.name.startswith("sltk."):
            split[f"{e.name[5:]}: Python"] += e.self_cpu_time_total
            continue
        where = marks[0] if marks else "loop"
        kind = _kind(names) if where == "forward" else "ops"
        split[f"{where}: {kind}"] += e.self_cpu_time_total
    steps = max(record["steps"], 1)
    total_us = record["decode_s"] * 1e6
    known = sum(split.values())
    split["loop: Python"] += max(total_us - known, 0.0)
    per_step = {k: v / 1e3 / steps for k, v in sorted(split.items())}
    return {"profiled_wall_s": record["wall_s"], "profiled_prefill_s": record["prefill_s"], "steps": steps,
            "ms_per_step": per_step}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kv", choices=["float32", "bfloat16"], default="float32", help="the KV cache's dtype")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 48])
    p.add_argument("--tokens", type=int, default=160, help="decode steps of the short-prompt runs")
    p.add_argument("--long", type=int, nargs=2, default=[16, 1150], metavar=("ROWS", "TOKENS"),
                   help="the long-context run: rows, and tokens of each one's text so far; the extension "
                        "prompt around it adds about 240 (0 0: none)")
    p.add_argument("--long-tokens", type=int, default=32)
    p.add_argument("--no-profile", action="store_true")
    args = p.parse_args()

    torch.manual_seed(0)
    reach = {"matmul_flops": matmul_flops(), "copy_bytes_per_s": copy_bytes()}
    print(f"{machine()}\nplain float32 matmul 2048^3: {reach['matmul_flops'] / 1e9:.1f} GFLOP/s; "
          f"memory copy: {reach['copy_bytes_per_s'] / 1e9:.1f} GB/s")
    loaded = sltk.load_base(quantization=None)
    kv = None if args.kv == "float32" else args.kv
    kv_bytes = 4 if kv is None else 2
    shape = model_shape(loaded.model)
    backend = HFBackend(loaded, batch_size=max(args.batches + [args.long[0]]), progress=False, kv_dtype=kv)
    short = seed_requests(max(args.batches))
    cases = [(f"decode, batch {b}", short[:b], args.tokens) for b in args.batches]
    if args.long[0]:
        cases.append((f"decode, batch {args.long[0]}, long prompts",
                      long_requests(args.long[0], args.long[1], args.long[1], loaded.tokenizer), args.long_tokens))
    rows = []
    run_decode(backend, short[:2], 8)  # warm-up
    for label, requests, tokens in cases:
        r = run_decode(backend, requests, tokens)
        batch, steps = len(requests), r["steps"]
        context = sum(r["prompt_tokens"]) / batch + (steps + 1) / 2  # mean cache length over the decode
        flops, nbytes = decode_cost(shape, batch, context, kv_bytes)
        step = r["decode_s"] / steps
        row = {"case": label, "batch": batch, "mean_context": context, "steps": steps, "ms_per_step": step * 1e3,
               "tokens_per_s": batch / step, "flops_per_s": flops / step, "bytes_per_s": nbytes / step,
               "prefill_s": r["prefill_s"], "prompt_tokens": sum(r["prompt_tokens"]),
               "prefill_flops_per_s": prefill_flops(shape, r["prompt_tokens"]) / r["prefill_s"]}
        if not args.no_profile:
            row["profile"] = profile_decode(backend, requests, tokens)
        rows.append(row)
        print(f"{label}: {row['ms_per_step']:.1f} ms/step, {row['tokens_per_s']:.1f} tok/s", flush=True)

    print("\n| case | mean context | ms/step | tokens/s | GFLOP/s (of matmul) | GB/s (of copy) |\n"
          "|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['mean_context']:.0f} | {r['ms_per_step']:.1f} | {r['tokens_per_s']:.1f} | "
              f"{r['flops_per_s'] / 1e9:.1f} ({r['flops_per_s'] / reach['matmul_flops']:.0%}) | "
              f"{r['bytes_per_s'] / 1e9:.1f} ({r['bytes_per_s'] / reach['copy_bytes_per_s']:.0%}) |")
    print("\n| prefill of | prompt tokens | seconds | tokens/s | GFLOP/s (of matmul) |\n|---|---|---|---|---|")
    for r in rows:
        f = r["prefill_flops_per_s"]
        rate = r["prompt_tokens"] / r["prefill_s"]
        print(f"| {r['case']} | {r['prompt_tokens']} | {r['prefill_s']:.2f} | {rate:.0f} | "
              f"{f / 1e9:.1f} ({f / reach['matmul_flops']:.0%}) |")
    if not args.no_profile:
        parts = sorted({k for r in rows for k in r["profile"]["ms_per_step"]})
        print("\nms per decode step, profiled (the profiler adds its own cost):\n")
        print("| part | " + " | ".join(r["case"] for r in rows) + " |\n|---|" + "---|" * len(rows))
        for part in parts:
            print(f"| {part} | " + " | ".join(f"{r['profile']['ms_per_step'].get(part, 0.0):.1f}" for r in rows) + " |")
        steps = [(r["profile"]["profiled_wall_s"] - r["profile"]["profiled_prefill_s"]) * 1e3 / r["profile"]["steps"]
                 for r in rows]
        print("| profiled step | " + " | ".join(f"{t:.1f}" for t in steps) + " |")
    result = {"machine": machine(), "kv_cache": args.kv, "reach": reach, "shape": shape, "rows": rows}
    out = HERE / "results" / f"limits-{args.kv}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"\nsaved {out}")


if __name__ == "__main__":
    main()
