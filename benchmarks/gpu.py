"""GPU check of the 4-bit path: a randomly initialised model of a real model's shape, measured.

    python benchmarks/gpu.py model --shape Qwen/Qwen2.5-7B-Instruct --tokenizer TOKENIZER_DIR --out /tmp/qwen7b
    python benchmarks/gpu.py memory --model /tmp/qwen7b --preset colab-t4 [--t4-attention]

`model` builds the architecture of a model in `sltk.memory.MODELS` (vocabulary size included) with
random weights and saves it, in float16, with a tokenizer that can be had offline (the embedded
one). Rows of the output layer past that tokenizer's vocabulary are zeroed and the others scaled,
so sampling stays (almost) within tokens the tokenizer can decode; the share that does not is
reported by `memory`.

`memory` loads that folder as the preset does (4-bit NF4, its compute dtype), attaches both roles
and runs the heaviest calls of the preset with sltk's own code: a batch of drafts at the cap, a
stage-2 extension batch whose freed slot takes a full-length prompt while the other rows sit near
the cap, and QLoRA training steps on records of `train.max_seq_len` tokens. Each reports its peak
GPU memory (`torch.cuda.max_memory_allocated`) beside `sltk.memory`'s estimate of the same call,
and tokens/s. `--t4-attention` allows only the SDPA kernels a T4 has (memory-efficient and math,
no flash), so an H100 or A100 measures what the T4 estimate models.

Results go to benchmarks/results/gpu_<preset>.json and are printed as a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import torch

import sltk
from sltk import memory, models, records
from sltk.backends import HFBackend
from sltk.chat import ChatRequest

HERE = Path(__file__).resolve().parent
SEEDS = HERE.parent / "data" / "seed_en.jsonl"
PROMPT_TEMPLATE = 64  # tokens of chat template around the user text in the stand-in prompts
ARCH = {"Qwen/Qwen2.5-7B-Instruct": "qwen2", "meta-llama/Llama-3.1-8B-Instruct": "llama"}
TINY = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 50000, "tie_word_embeddings": False}


def build_model(shape_name: str, tokenizer_dir: str, out: str, scale: float = 3.0) -> None:
    """Save a randomly initialised model of `shape_name`'s architecture with the given tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    shape = TINY if shape_name == "tiny" else memory.MODELS[shape_name]
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
           "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id}
    cfg = AutoConfig.for_model(ARCH.get(shape_name, "llama"), **shape, **ids, max_position_embeddings=32768)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        net = AutoModelForCausalLM.from_config(cfg, dtype=torch.float16)
    with torch.no_grad():
        head = net.get_output_embeddings().weight
        head[len(tok):] = 0  # never-trained rows: logit 0, far below the scaled real rows
        head[: len(tok)] *= scale
        shares = _add_structure(net, tok)
    net.save_pretrained(out)
    tok.save_pretrained(out)
    params = sum(p.numel() for p in net.parameters())
    print(f"saved {shape_name} shape ({params / 1e9:.2f} B parameters, vocabulary {cfg.vocab_size}, "
          f"tokenizer {len(tok)}) to {out}; sampled shares {shares}")


STRUCTURE = {"\n\n": 0.03, ".": 0.06}  # how often the random model should write these (paragraphs, sentences)


def _add_structure(net, tok, targets: dict = STRUCTURE) -> dict:
    """Make a random model end sentences and paragraphs, so texts can be split and extended.

    Hidden dimension 0 carries a constant: every token's embedding sets it, no layer reads it (its
    norm weights are 0) or writes it (its output rows are 0). The output rows of the tokens in
    `targets` read it with the weight that gives each its sampling share under sltk's default
    sampling (temperature, top-k, top-p), found by bisection on the logits of a sample text.
    """
    from sltk.chat import Sampling

    layers = net.model.layers
    for layer in layers:
        layer.self_attn.o_proj.weight[0] = 0
        layer.mlp.down_proj.weight[0] = 0
        layer.input_layernorm.weight[0] = 0
        layer.post_attention_layernorm.weight[0] = 0
    head, emb = net.get_output_embeddings().weight, net.get_input_embeddings().weight
    head[:, 0] = 0
    text = tok.apply_chat_template([{"role": "user", "content": _seed_text(tok, 256)}], tokenize=False,
                                   add_generation_prompt=True) + _seed_text(tok, 256)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(head.device)
    seen = {}
    hook = net.get_output_embeddings().register_forward_pre_hook(lambda m, a: seen.update(x=a[0][0].float()))
    net(input_ids=ids[:, :64])  # the residual's size at the end, without the constant
    emb[:, 0] = 3 * seen["x"][:, 1:].std() / net.model.norm.weight[1:].float().abs().mean()
    logits = net(input_ids=ids).logits[0].float()
    hook.remove()
    d0 = seen["x"][:, 0]  # the constant after the final norm, per position
    s = Sampling()
    shares = {}
    for piece, share in targets.items():
        t = tok.encode(piece, add_special_tokens=False)[0]
        lo, hi = 0.0, float(200 / d0.min())
        for _ in range(40):
            mid = (lo + hi) / 2
            trial = logits.clone()
            trial[:, t] += mid * d0
            lo, hi = (mid, hi) if _sampled_share(trial, t, s) < share else (lo, mid)
        head[t, 0] = hi
        trial = logits.clone()
        trial[:, t] += hi * d0
        shares[piece] = round(_sampled_share(trial, t, s), 3)
    return shares


def _sampled_share(logits, token: int, s) -> float:
    """Mean probability of sampling `token` per position, with temperature, top-k and top-p."""
    vals, idx = (logits / s.temperature).topk(s.top_k, -1)
    p = torch.softmax(vals, -1)
    p = p * ((p.cumsum(-1) - p) < s.top_p)
    p = p / p.sum(-1, keepdim=True)
    return float((p * (idx == token)).sum(-1).mean())


def _seed_queries() -> list[str]:
    return [r["query"] for r in records.read_jsonl(SEEDS)]


def _seed_text(tok, tokens: int) -> str:
    """Seed instructions repeated until they make `tokens` tokens: a stand-in for a draft."""
    queries = _seed_queries()
    text, ids = "", []
    while len(ids) < tokens:
        text += " ".join(queries) + "\n\n"
        ids = tok(text, add_special_tokens=False)["input_ids"]
    return tok.decode(ids[:tokens])


def _measure(fn):
    """Result, seconds and peak GiB of `fn()`: torch's CUDA peak, or (to try the script on a CPU) the process's."""
    if not torch.cuda.is_available():
        start = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - start, models.peak_memory()["process_gib"]
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - start, torch.cuda.max_memory_allocated() / 2**30


def _stray_mass(loaded, query: str, temperature: float) -> float:
    """Probability of sampling an id the tokenizer lacks, at the first position of an answer."""
    tok = loaded.tokenizer
    text = tok.apply_chat_template([{"role": "user", "content": query}], tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(loaded.device)
    with torch.inference_mode():
        logits = loaded.model(input_ids=ids).logits[0, -1].float()
    return float(torch.softmax(logits / temperature, -1)[len(tok):].sum())


def measure(model_dir: str, preset_name: str, t4_attention: bool, train_steps: int = 3) -> dict:
    """Load as `preset_name` does and measure its drafts, extension and training calls."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from sltk.train import TrainConfig, train_role

    config = sltk.preset(preset_name, model=model_dir)
    attention = (sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]) if t4_attention
                 else contextlib.nullcontext())
    start = time.perf_counter()
    loaded = sltk.load_base(model_dir, quantization=config.quantization, dtype=config.dtype)
    sltk.add_roles(loaded, sltk.lora_config(**vars(config.lora), model=loaded.model))
    load_s = time.perf_counter() - start
    static_gib = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    tok, cfg = loaded.tokenizer, loaded.model.config
    w = memory.workloads(config)
    c = 4 if config.dtype == "float32" else 2
    common = {"quantization": config.quantization, "compute_dtype_bytes": c, "flash_attention": not t4_attention,
              "lora_r": config.lora.r, "lora_targets": config.lora.target_modules}
    backend = HFBackend(loaded, batch_size=config.batch_size, progress=False)
    sampling = config.sampling
    m = sampling.max_new_tokens
    rows = {}

    def gen_row(name, requests, estimate):
        # min_new_tokens = the cap: the end token is held off, so every row writes all of it (the worst case)
        outs, seconds, peak = _measure(lambda: backend.generate(requests, sampling, seed=0, desc=name))
        new = sum(o.tokens for o in outs)
        worst = max(estimate.values(), key=lambda e: e["total"])
        rows[name] = {"requests": len(requests), "new_tokens": new, "seconds": round(seconds, 1),
                      "tokens_per_second": round(new / seconds, 1), "peak_gib": round(peak, 2),
                      "estimate_gib": round(worst["total"], 2),
                      "estimate_moment": max(estimate, key=lambda k: estimate[k]["total"])}
        print(name, rows[name], flush=True)

    queries = _seed_queries()
    stray = _stray_mass(loaded, queries[0], sampling.temperature)
    with attention:
        # drafts: one full batch of seed instructions, each written to the cap
        drafts = [ChatRequest([{"role": "user", "content": q}], id=str(i), min_new_tokens=m, role="generator")
                  for i, q in enumerate(queries[: config.batch_size])]
        gen_row("drafts", drafts, memory.generation_moments(cfg, config.batch_size, w["drafts"]["context_tokens"],
                                                            w["drafts"]["prompt_tokens"], **common))
        # extension stage 2: full-length prompts; the first row stops early, so its slot takes the last
        # prompt while the others sit near the cap (the estimate's "refill" moment)
        p = w["extension"]["prompt_tokens"] - PROMPT_TEMPLATE
        ext = [ChatRequest([{"role": "user", "content": _seed_text(tok, p)}], id=f"x{i}", role="extender",
                           min_new_tokens=m if i else m - m // 8, max_new_tokens=m if i else m - m // 8)
               for i in range(config.batch_size + 1)]
        gen_row("extension", ext, memory.generation_moments(cfg, config.batch_size, w["extension"]["context_tokens"],
                                                            w["extension"]["prompt_tokens"], **common))
        # training: records of max_seq_len tokens (a short instruction, a long answer)
        seq = w["training"]["seq_len"]
        data = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": _seed_text(tok, seq)}]}
                for q in queries[:train_steps]]
        tc = TrainConfig(epochs=1, lr=config.train.lr, batch_size=config.train.batch_size, max_seq_len=seq,
                         gradient_checkpointing=config.train.gradient_checkpointing, log_every=1)
        with tempfile.TemporaryDirectory() as folder:
            result, seconds, peak = _measure(lambda: train_role(loaded, "generator", data, folder, tc, resume=False,
                                                                progress=False))
        est = memory.training_moments(cfg, seq, config.train.batch_size, config.lora.r, config.lora.target_modules,
                                      config.train.gradient_checkpointing, config.quantization, c,
                                      flash_attention=not t4_attention)
        rows["training"] = {"requests": len(data), "new_tokens": result["tokens"], "seconds": round(seconds, 1),
                            "tokens_per_second": round(result["tokens"] / seconds, 1), "peak_gib": round(peak, 2),
                            "estimate_gib": round(max(e["total"] for e in est.values()), 2),
                            "estimate_moment": max(est, key=lambda k: est[k]["total"])}
        print("training", rows["training"], flush=True)

    cuda = torch.cuda.is_available()
    props = torch.cuda.get_device_properties(0) if cuda else None
    return {"gpu": props.name if cuda else "CPU (process peak)", "gpu_gib": round(props.total_memory / 2**30, 1)
            if cuda else None, "torch": torch.__version__,
            "preset": preset_name, "dtype": config.dtype, "quantization": config.quantization,
            "attention": "T4 kernels (memory-efficient, math)" if t4_attention else "all SDPA kernels",
            "model_parameters_b": round(sum(p.numel() for p in loaded.model.parameters()) / 1e9, 2),
            "load_seconds": round(load_s, 1), "stray_token_probability": round(stray, 5),
            "after_load_gib": round(static_gib, 2), "rows": rows,
            "peak": models.peak_memory()}



def table(result: dict) -> str:
    lines = [f"{result['gpu']} ({result['gpu_gib']} GiB), torch {result['torch']}, preset {result['preset']} "
             f"({result['quantization']}, {result['dtype']}), {result['attention']}; weights and both roles "
             f"after loading: {result['after_load_gib']} GiB, load {result['load_seconds']} s; "
             f"probability of an id past the tokenizer: {result['stray_token_probability']}",
             "", "| call | requests | tokens | s | tokens/s | peak GiB | estimate GiB (moment) |",
             "|---|---|---|---|---|---|---|"]
    for name, r in result["rows"].items():
        lines.append(f"| {name} | {r['requests']} | {r['new_tokens']} | {r['seconds']} | {r['tokens_per_second']} | "
                     f"{r['peak_gib']} | {r['estimate_gib']} ({r['estimate_moment']}) |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("model", help="save a randomly initialised model of a real shape")
    b.add_argument("--shape", default="Qwen/Qwen2.5-7B-Instruct", help=f"one of {sorted(memory.MODELS)} or 'tiny'")
    b.add_argument("--tokenizer", required=True, help="a folder with a chat tokenizer (e.g. the embedded model's)")
    b.add_argument("--out", required=True)
    m = sub.add_parser("memory", help="peak GPU memory and tokens/s of a preset's heaviest calls")
    m.add_argument("--model", required=True)
    m.add_argument("--preset", default="colab-t4")
    m.add_argument("--t4-attention", action="store_true", help="only the SDPA kernels a T4 has")
    m.add_argument("--train-steps", type=int, default=3)
    m.add_argument("--out", help="results file (default: benchmarks/results/gpu_<preset>[_t4attn].json)")
    args = ap.parse_args()
    if args.cmd == "model":
        build_model(args.shape, args.tokenizer, args.out)
        return
    result = measure(args.model, args.preset, args.t4_attention, args.train_steps)
    print(table(result))
    out = Path(args.out or HERE / "results" / f"gpu_{args.preset}{'_t4attn' if args.t4_attention else ''}.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print("saved", out)


if __name__ == "__main__":
    main()
