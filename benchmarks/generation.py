"""Generation speed of the embedded model on this machine, and the runaway-batch case.

    python benchmarks/generation.py speed     # sequential vs batched tokens/s
    python benchmarks/generation.py runaway   # 24 drafts, 2,048-token cap: static batch vs sltk
    python benchmarks/generation.py prefill   # 48 stage-2-sized prompts: one padded prefill vs groups
    python benchmarks/generation.py peers     # sltk against the engines a CPU user would pick (peers.py)

Results are printed as a markdown table and saved as JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

import sltk
from sltk.backends import PREFILL_TOKENS, HFBackend
from sltk.chat import ChatRequest, Sampling
from sltk.prompts import extension_prompt

HERE = Path(__file__).resolve().parent
SEEDS = HERE.parent / "data" / "seed_en.jsonl"
ENGINES = ("sltk", "loop", "padded", "generate_batch", "serve", "llama.cpp")  # what peers --engines picks from


def machine() -> str:
    """The CPU's name with its widest vector extension (/proc/cpuinfo names some CPUs only "AMD EPYC"),
    the cores, torch and the system."""
    cpu, flags = "unknown CPU", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and cpu == "unknown CPU":
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    widest = next((name for flag, name in (("amx_tile", "AMX"), ("avx512_bf16", "AVX-512 BF16"),
                                           ("avx512f", "AVX-512"), ("avx2", "AVX2")) if flag in flags), None)
    if widest and widest not in cpu:
        cpu = f"{cpu} ({widest})"
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {platform.system()}"


def seed_requests(n: int) -> list[ChatRequest]:
    queries = [json.loads(line)["query"] for line in SEEDS.read_text().splitlines() if line.strip()]
    return [ChatRequest([{"role": "user", "content": q}], id=str(i)) for i, q in enumerate(queries[:n])]


def static_batch(loaded, requests, sampling: Sampling, seed: int) -> dict:
    """transformers' generate() on one padded batch: the batch runs until its longest member ends."""
    tok = loaded.tokenizer
    texts = [tok.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True) for r in requests]
    batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(seed)
    start = time.perf_counter()
    with torch.inference_mode():
        out = loaded.model.generate(
            **batch, do_sample=True, max_new_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
            top_p=sampling.top_p, top_k=sampling.top_k, repetition_penalty=sampling.repetition_penalty,
            pad_token_id=tok.pad_token_id,
        )
    seconds = time.perf_counter() - start
    gen = out[:, batch["input_ids"].shape[1]:]
    lengths = (gen != tok.pad_token_id).sum(-1).tolist()
    return {"seconds": seconds, "tokens": sum(lengths), "tokens_per_second": sum(lengths) / seconds,
            "at_cap": sum(n >= sampling.max_new_tokens for n in lengths), "steps": gen.shape[1]}


def sltk_batch(loaded, requests, sampling: Sampling, seed: int, batch_size: int, **backend_args) -> dict:
    backend = HFBackend(loaded, batch_size=batch_size, progress=False, **backend_args)
    backend.generate(requests, sampling, seed=seed)
    s = backend.last_stats
    return {"seconds": s["seconds"], "tokens": s["tokens"], "tokens_per_second": s["tokens_per_second"],
            "finish_reasons": s["finish_reasons"], "steps": s["decode_steps"]}


def speed(args) -> dict:
    """Sequential vs batched tokens/s, for each weight format, in one process."""
    sampling = Sampling(max_new_tokens=args.tokens, stop=(), loop_tokens=0)
    rows = {}
    for fmt in args.formats:
        quantization, dtype = ("nf4", torch.bfloat16) if fmt == "nf4" else (None, getattr(torch, fmt))
        loaded = sltk.load_base(quantization=quantization, dtype=dtype)
        rows[f"{fmt}: sequential (batch 1)"] = sltk_batch(loaded, seed_requests(args.sequential), sampling, 0, 1)
        for bs in args.batch_sizes:
            rows[f"{fmt}: sltk batch {bs}"] = sltk_batch(loaded, seed_requests(bs), sampling, 0, bs)
            if args.compare:
                rows[f"{fmt}: generate() batch {bs}"] = static_batch(loaded, seed_requests(bs), sampling, 0)
    return {"max_new_tokens": args.tokens, "rows": rows}


def runaway(args) -> dict:
    loaded = sltk.load_base(quantization=None)
    requests = seed_requests(24)
    sampling = Sampling(max_new_tokens=2048)
    rows = {
        "generate() static batch of 24, no guard": static_batch(loaded, requests, sampling, 0),
        "sltk, refill + repetition guard": sltk_batch(loaded, requests, sampling, 0, 24),
    }
    return {"format": "bfloat16", "max_new_tokens": 2048, "rows": rows}


def long_requests(n: int, shortest: int, longest: int, tokenizer) -> list[ChatRequest]:
    """Extension prompts whose texts (seed instructions strung together) run from `shortest` to `longest` tokens."""
    queries = [json.loads(line)["query"] for line in SEEDS.read_text().splitlines() if line.strip()]
    pool = "\n\n".join(queries * 20).split(" ")
    out = []
    for i in range(n):
        target = shortest + (longest - shortest) * i // max(n - 1, 1)
        words = target * 3 // 4
        while len(tokenizer(" ".join(pool[i: i + words]))["input_ids"]) < target:
            words += 16
        prompt = extension_prompt(queries[i % len(queries)], " ".join(pool[i: i + words]))
        out.append(ChatRequest([{"role": "user", "content": prompt}], id=str(i)))
    return out


def prefill(args) -> dict:
    """The prefill of a batch of long prompts of unequal length (stage 2 of the extension), in one process."""
    loaded = sltk.load_base(quantization=None)
    requests = long_requests(48, 800, 2000, loaded.tokenizer)
    sampling = Sampling(max_new_tokens=args.tokens, stop=(), loop_tokens=0)
    rows = {}
    for budget in (10**9, PREFILL_TOKENS):
        name = "one padded prefill of 48" if budget == 10**9 else f"groups of at most {budget} padded tokens"
        rows[name] = sltk_batch(loaded, requests, sampling, 0, 48, kv_dtype="bfloat16", prefill_tokens=budget)
    return {"format": "float32 weights, bfloat16 KV cache (cpu-demo)", "prompt_tokens": "800 to 2,000",
            "max_new_tokens": args.tokens, "rows": rows}


def peers(args) -> dict:
    """sltk and its peers on the same two workloads (benchmarks/peers.py)."""
    import peers as peer_engines

    tokenizer = sltk.load_base(quantization=None).tokenizer
    return peer_engines.measure(seed_requests(64), long_requests(48, 800, 2000, tokenizer), args,
                                lambda partial: save_peers({"machine": machine(), "mode": "peers", **partial}))


def save_peers(result: dict) -> dict:
    """Write `result` into results/peers.json, over the rows saved there from the same machine."""
    out = HERE / "results" / "peers.json"
    out.parent.mkdir(exist_ok=True)
    if out.exists():
        result = merge_peers(json.loads(out.read_text()), result)
    out.write_text(json.dumps(result, indent=2))
    return result


def merge_peers(saved: dict, new: dict) -> dict:
    """The rows just measured over those saved from the same machine, so that runs of some engines or
    one workload (`--engines`, `--workloads`) add up to one table."""
    if saved.get("machine") != new["machine"] or "workloads" not in saved:
        return new
    for name, work in new["workloads"].items():
        rows = {**saved["workloads"].get(name, {}).get("rows", {}), **work["rows"]}
        saved["workloads"][name] = {**work, "rows": rows}
    saved["skipped"] = sorted(set(saved.get("skipped", [])) | set(new["skipped"]))
    return saved


def print_peers(result: dict) -> None:
    for name, work in result["workloads"].items():
        print(f"\n{name}: {work['prompts']} prompts, up to {work['max_new_tokens']} new tokens\n")
        rows = work["rows"]
        best = max((r["tokens_per_second"] for r in rows.values() if "tokens_per_second" in r), default=1.0)
        print("| engine | tokens | seconds | tokens/s | × the fastest | first answer s | last answer s |")
        print("|---|---|---|---|---|---|---|")
        for engine, r in rows.items():
            if "error" in r:
                print(f"| {engine} | failed: {r['error'][:120]} | | | | | |")
                continue
            if r.get("stopped_at_deadline_s"):
                last = f"stopped at {r['stopped_at_deadline_s']:.0f} s, {r['answered']} of {r['of']} answered"
            else:
                last = f"{r['last_answer_s']:.0f}" + (" (extrapolated)" if r.get("extrapolated") else "")
            first = f"{r['first_answer_s']:.1f}" if r["first_answer_s"] is not None else "—"
            print(f"| {engine} | {r['tokens']} | {r['seconds']:.1f} | {r['tokens_per_second']:.1f} | "
                  f"{r['tokens_per_second'] / best:.2f} | {first} | {last} |")
    for line in result["skipped"]:
        print(f"skipped: {line}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["speed", "runaway", "prefill", "peers"])
    p.add_argument("--formats", nargs="+", default=["bfloat16", "float32", "nf4"],
                   help="weight formats to time: bfloat16, float32 (unquantised) and nf4 (4-bit, bf16 compute)")
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--sequential", type=int, default=4)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32])
    p.add_argument("--compare", action="store_true", help="also time transformers' generate() on the same batch")
    p.add_argument("--llama-server", help="peers: llama.cpp's llama-server binary (default: llama-server on PATH)")
    p.add_argument("--workloads", nargs="+", choices=["seeds", "stage2"], default=["seeds", "stage2"],
                   help="peers: which workloads to measure")
    p.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES,
                   help="peers: which engines to measure (default: all)")
    p.add_argument("--slots", type=int, nargs="+", default=[1, 8, 16, 32],
                   help="peers: the parallel slots of each llama.cpp server measured")
    p.add_argument("--deadline", type=float, default=600,
                   help="peers: seconds after which generate_batch is stopped (its finished answers count)")
    p.add_argument("--slow-subset", type=int, default=8,
                   help="peers: prompts the slowest engines answer (their rate is extrapolated to the workload)")
    args = p.parse_args()
    measure = {"speed": speed, "runaway": runaway, "prefill": prefill, "peers": peers}[args.mode]
    result = {"machine": machine(), "mode": args.mode, **measure(args)}
    out = HERE / "results" / f"{args.mode}.json"
    if args.mode == "peers":
        print(f"\n{result['machine']}\n")
        print_peers(save_peers(result))
        print(f"\nsaved {out}")
        return
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\n{result['machine']}\n")
    print("| run | tokens | seconds | tokens/s | decode steps |\n|---|---|---|---|---|")
    for name, r in result["rows"].items():
        print(f"| {name} | {r['tokens']} | {r['seconds']:.1f} | {r['tokens_per_second']:.1f} | {r['steps']} |")
    print(f"\nsaved {out}")


if __name__ == "__main__":
    main()
