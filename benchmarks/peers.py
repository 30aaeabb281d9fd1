"""sltk's generation against the engines a CPU user would pick instead, on the same prompts.

    python benchmarks/generation.py peers [--llama-server PATH] [--slow-subset 8]   (this module is its part)

Two workloads, each in one process, every peer on the same requests with the loop's sampling
(temperature 0.7, top-p 0.8, top-k 20, repetition penalty 1.1), stopping only at the end token or
the cap (no stop strings, no loop guard, so every engine does the same kind of work):

- `seeds`: the first 64 seed prompts, up to 512 new tokens;
- `stage2`: 48 extension prompts of 800 to 2,000 tokens (stage 2 of the extension), 256 new tokens.

Peers: sltk's `HFBackend` (float32; the `cpu-demo` settings: float32 weights, bfloat16 KV cache;
bfloat16 weights),
a plain `model.generate` loop one prompt at a time, `model.generate` on one padded batch,
transformers' continuous batching (`generate_batch`, and `transformers serve --continuous-batching`
through sltk's served backend), and llama.cpp's `llama-server` on the embedded GGUF (Q4_1) with 1,
8, 16 and 32 parallel slots. A peer that is not installed is skipped, saying so; nothing is
installed here. The slowest peers (the sequential loop, `transformers serve`) answer only the first
`--slow-subset` prompts: their rate is measured there and their wall time for the whole workload
is that rate's extrapolation, marked as such.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

import sltk
from sltk import embedded
from sltk.backends import HFBackend
from sltk.chat import Sampling
from sltk.served import OpenAIBackend


def _sampling(tokens: int) -> Sampling:
    return Sampling(max_new_tokens=tokens, stop=(), loop_tokens=0)


def _row(tokens: int, seconds: float, first: float | None, answered: int, of: int,
         deadline: float | None = None, **extra) -> dict:
    """One peer's numbers. Fewer answers than requests: a subset asked on purpose (the whole workload's
    wall time is extrapolated at the measured rate), or, with `deadline`, a run stopped then (the
    unfinished answers' tokens are not counted, so the rate is a lower bound)."""
    row = {"tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / max(seconds, 1e-9),
           "first_answer_s": first, "last_answer_s": seconds, "answered": answered, "of": of}
    if deadline is not None and answered < of:
        row.update(last_answer_s=None, stopped_at_deadline_s=deadline)
    elif 0 < answered < of:
        row.update(last_answer_s=seconds * of / answered, extrapolated=True)
    return {**row, **extra}


def _with_first_answer_time(generate) -> tuple[list, float, float | None]:
    """Runs `generate(on_result)`; returns its completions, the wall time and the time of the first answer."""
    start, first = time.perf_counter(), []

    def on_result(i, completion):
        if not first:
            first.append(time.perf_counter() - start)

    out = generate(on_result)
    return out, time.perf_counter() - start, (first[0] if first else None)


def sltk_peer(loaded, requests, tokens: int, batch_size: int, **backend_args) -> dict:
    backend = HFBackend(loaded, batch_size=batch_size, progress=False, **backend_args)
    start = time.perf_counter()
    out = backend.generate(requests, _sampling(tokens), seed=0)  # (no per-answer hook: first answer not timed)
    return _row(sum(c.tokens for c in out), time.perf_counter() - start, None, len(out), len(requests))


def _prompt_ids(tok, requests) -> list[list[int]]:
    return [tok.apply_chat_template(r.messages, tokenize=True, add_generation_prompt=True, return_dict=False)
            for r in requests]


def _generation_config(tok, tokens: int):
    from transformers import GenerationConfig

    s = _sampling(tokens)
    return GenerationConfig(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                            repetition_penalty=s.repetition_penalty, max_new_tokens=tokens,
                            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def sequential_peer(loaded, requests, tokens: int, subset: int) -> dict:
    """A plain `model.generate` loop, one prompt at a time (on the first `subset` prompts)."""
    tok, config = loaded.tokenizer, _generation_config(loaded.tokenizer, tokens)
    torch.manual_seed(0)
    start, first, total = time.perf_counter(), None, 0
    for ids in _prompt_ids(tok, requests[:subset]):
        x = torch.tensor([ids])
        with torch.inference_mode():
            out = loaded.model.generate(input_ids=x, attention_mask=torch.ones_like(x), generation_config=config)
        total += out.shape[1] - x.shape[1]
        first = first or time.perf_counter() - start
    return _row(total, time.perf_counter() - start, first, subset, len(requests))


def padded_peer(loaded, requests, tokens: int) -> dict:
    """`model.generate` on one left-padded batch: it runs until its longest member ends."""
    tok, config = loaded.tokenizer, _generation_config(loaded.tokenizer, tokens)
    ids = _prompt_ids(tok, requests)
    width = max(map(len, ids))
    x = torch.tensor([[tok.pad_token_id] * (width - len(i)) + i for i in ids])
    mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.inference_mode():
        out = loaded.model.generate(input_ids=x, attention_mask=mask, generation_config=config)
    seconds = time.perf_counter() - start
    gen = out[:, width:]
    produced = 0
    for row in gen.tolist():  # up to and with the first end token
        produced += next((k + 1 for k, t in enumerate(row) if t == tok.eos_token_id), len(row))
    return _row(produced, seconds, seconds, len(requests), len(requests), steps=gen.shape[1])


def generate_batch_peer(loaded, requests, tokens: int, deadline: float) -> dict:
    """transformers' continuous batching in the process: what `model.generate_batch` does (its manager,
    sized by the same workload hints), stopped after `deadline` seconds with the answers finished by then."""
    from transformers.generation.continuous_batching.utils import WorkloadHints

    tok, config = loaded.tokenizer, _generation_config(loaded.tokenizer, tokens)
    prompts = _prompt_ids(tok, requests)
    hints = WorkloadHints(max_prompt_length=max(map(len, prompts)), max_generated_length=tokens,
                          num_requests=len(prompts))
    torch.manual_seed(0)
    start, done, first = time.perf_counter(), [], None
    with torch.inference_mode():
        manager = loaded.model.init_continuous_batching(generation_config=config, workload_hints=hints)
        manager.start()
        try:
            manager.add_requests(inputs=prompts, max_new_tokens=tokens)
            while len(done) < len(prompts) and time.perf_counter() - start < deadline:
                result = manager.get_result(timeout=1)
                if result is not None and result.is_finished() and result.error is None:
                    done.append(result)
                    first = first if first is not None else time.perf_counter() - start
                elif result is None and not manager.is_running():
                    break
            seconds = time.perf_counter() - start
        finally:
            manager.stop(block=True, timeout=60, hard_stop=True)
            manager.destroy()
    return _row(sum(len(o.generated_tokens) for o in done), seconds, first, len(done), len(requests), deadline)


# -- servers ----------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """A server process on loopback, in its own process group, waited for at /v1/models."""

    def __init__(self, argv: list[str], port: int, log: Path, env: dict | None = None, timeout: float = 180):
        self.url, self.log = f"http://127.0.0.1:{port}/v1", log
        self.proc = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, **(env or {})})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {self.proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/models", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{argv[0]} did not answer within {timeout:.0f} s: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def served_peer(server: _Server, model: str, requests, tokens: int, concurrency: int, tokenizer,
                extra_body: dict | None = None, subset: int | None = None) -> dict:
    backend = OpenAIBackend(server.url, model, concurrency=concurrency, retries=0, timeout=3600, tokenizer=tokenizer,
                            progress=False, extra_body=extra_body)
    asked = requests[:subset] if subset else requests
    out, seconds, first = _with_first_answer_time(
        lambda cb: backend.generate(asked, _sampling(tokens), seed=0, on_result=cb))
    return _row(sum(c.tokens for c in out), seconds, first, len(out), len(requests))


def llama_server_binary(given: str | None) -> str | None:
    return given or shutil.which("llama-server")


def llama_cpp_peer(binary: str, slots: int, requests, tokens: int, context_per_slot: int, tokenizer,
                   work: Path) -> dict:
    port = _free_port()
    argv = [binary, "-m", str(embedded.gguf_path()), "--host", "127.0.0.1", "--port", str(port),
            "-np", str(slots), "-c", str(context_per_slot * slots), "-t", str(os.cpu_count() or 1),
            "--no-webui", "--jinja"]
    server = _Server(argv, port, work / f"llama-server-{slots}.log")
    try:
        # llama.cpp names the repetition penalty repeat_penalty
        return served_peer(server, "embedded", requests, tokens, slots, tokenizer,
                           extra_body={"repeat_penalty": _sampling(tokens).repetition_penalty})
    finally:
        server.stop()


def transformers_serve_peer(folder: Path, requests, tokens: int, subset: int, tokenizer, work: Path) -> dict:
    script = Path(sys.executable).parent / "transformers"
    port = _free_port()
    hub = work / "hub"
    hub.mkdir(exist_ok=True)
    server = _Server([str(script), "serve", str(folder), "--continuous-batching", "--device", "cpu",
                      "--host", "127.0.0.1", "--port", str(port)], port, work / "transformers-serve.log",
                     env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub)})
    try:
        return served_peer(server, str(folder), requests, tokens, 16, tokenizer, subset=subset,
                           extra_body={"generation_config": '{"do_sample": true}'})
    finally:
        server.stop()


# -- the two workloads ------------------------------------------------------------------------

def run(requests, tokens: int, context_per_slot: int, args, skipped: list[str], label: str, save) -> dict:
    """Every peer on `requests`; returns {peer: row}, and calls `save(rows)` after each one."""
    rows: dict[str, dict] = {}
    folder = embedded.ensure_checkpoint()

    def attempt(name, measure, engine):
        if engine not in args.engines:
            return
        print(f"[{label}] {name} ...", flush=True)
        try:
            rows[name] = measure()
        except Exception as exc:  # a peer that fails is reported, not fatal for the others
            rows[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        print(f"[{label}] {name}: {rows[name]}", flush=True)
        save(rows)

    fp32 = sltk.load_base(quantization=None)
    n = len(requests)
    attempt(f"sltk HFBackend, float32, batch {n}", lambda: sltk_peer(fp32, requests, tokens, n), "sltk")
    demo = sltk.preset("cpu-demo")
    attempt(f"sltk HFBackend, cpu-demo (bf16 KV cache, batch {demo.batch_size})",
            lambda: sltk_peer(fp32, requests, tokens, demo.batch_size, kv_dtype=demo.kv_cache_dtype), "sltk")
    # bfloat16 weights: slower than float32 on some CPUs, faster on those whose matrix kernels use bf16
    # instructions; the rounded weights sample other texts than the float32 ones.
    attempt(f"sltk HFBackend, bfloat16 weights, batch {n}",
            lambda: sltk_peer(sltk.load_base(quantization=None, dtype="bfloat16"), requests, tokens, n), "sltk")
    attempt(f"model.generate, one prompt at a time (first {args.slow_subset})",
            lambda: sequential_peer(fp32, requests, tokens, args.slow_subset), "loop")
    attempt(f"model.generate, one padded batch of {n}", lambda: padded_peer(fp32, requests, tokens), "padded")
    attempt("transformers generate_batch (continuous batching)",
            lambda: generate_batch_peer(fp32, requests, tokens, args.deadline), "generate_batch")
    tokenizer = fp32.tokenizer
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        served = (Path(sys.executable).parent / "transformers").exists() and all(
            importlib.util.find_spec(m) for m in ("fastapi", "uvicorn", "openai"))
        if "serve" in args.engines and served:
            attempt(f"transformers serve --continuous-batching, 16 at a time (first {args.slow_subset})",
                    lambda: transformers_serve_peer(folder, requests, tokens, args.slow_subset, tokenizer, work),
                    "serve")
        elif "serve" in args.engines:
            skipped.append("transformers serve: not installed (pip install 'transformers[serving]')")
        binary = llama_server_binary(args.llama_server)
        for slots in args.slots if binary else ():
            attempt(f"llama.cpp server, {slots} slot{'s' if slots > 1 else ''} (Q4_1)",
                    lambda slots=slots: llama_cpp_peer(binary, slots, requests, tokens, context_per_slot, tokenizer,
                                                       work),
                    "llama.cpp")
        if "llama.cpp" in args.engines and not binary:
            skipped.append("llama.cpp server: no llama-server binary (--llama-server PATH, or on PATH)")
    return rows


def measure(seeds, stage2, args, save) -> dict:
    """Both workloads: `seeds` (64 prompts, 512 new tokens) and `stage2` (48 long prompts, 256 new tokens).

    `save(result)` is called with the result so far after every peer, so that a stopped run keeps
    the rows it measured."""
    skipped: list[str] = []
    result = {"sampling": "temperature 0.7, top-p 0.8, top-k 20, repetition penalty 1.1; end token or cap only",
              "workloads": {}, "skipped": skipped}
    shapes = {"seeds": (seeds, {"prompts": 64, "max_new_tokens": 512}, 512, 1024),
              "stage2": (stage2, {"prompts": 48, "prompt_tokens": "800 to 2,000", "max_new_tokens": 256}, 256, 2560)}
    for name in ("seeds", "stage2"):
        if name not in args.workloads:
            continue
        requests, about, tokens, context = shapes[name]

        def keep(rows, name=name, about=about):
            result["workloads"][name] = {**about, "rows": dict(rows)}
            save(result)

        keep(run(requests, tokens, context, args, skipped, name, keep))
    result["skipped"] = sorted(set(skipped))
    return result
