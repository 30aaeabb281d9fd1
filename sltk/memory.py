"""A GPU memory estimate for a Self-Lengthen run: generation (drafts, extensions) and QLoRA training.

Pure arithmetic from the model's shape: nothing is loaded and torch is not imported. A shape is a
`transformers` PretrainedConfig or a plain dict with the usual keys (`num_hidden_layers`,
`hidden_size`, `intermediate_size`, `num_attention_heads`, `num_key_value_heads`, `head_dim`
(optional), `vocab_size`, `tie_word_embeddings`); `MODELS` holds two of them.

    from sltk.config import preset
    from sltk.memory import MODELS, fits, generation_gib, training_gib

    qwen = MODELS["Qwen/Qwen2.5-7B-Instruct"]
    generation_gib(qwen, batch=4, context_tokens=5600, prompt_tokens=4100)["total"]
    training_gib(qwen, seq_len=3072)["total"]
    print(fits(qwen, preset("colab-t4"))["table"])

Every figure is in GiB and is the peak of one moment of the work (`generation_moments`,
`training_moments`); `generation_gib` and `training_gib` return the larger moment. It models what
sltk's own code does (backends.HFBackend, train.train_role) with PyTorch's SDPA attention:

- Weights: the decoder's linear layers in NF4 (4 bits a weight, plus an 8-bit absmax per block of
  64 and an fp32 absmax per 256 blocks with double quantisation: 4.127 bits); embeddings, lm_head
  (a second copy unless tied) and norms stay in the compute dtype. `quantization=None`: all in it.
- Adapters: LoRA A and B of every role in fp32 (PEFT keeps them in float32). Training adds the
  trained role's fp32 gradients and AdamW's two fp32 states.
- KV cache: 2 x layers x kv_heads x head_dim x bytes x tokens x batch. Rows decode together in one
  left-padded cache, so every row holds as many positions as the longest one; the cache grows into
  spare room (backends.GrowingLayer: max(256, a quarter) more positions), counted at its largest.
- Generation prefill: `HFBackend._prefill` asks for the logits of the last prompt position only
  (`prefill_logits="all"` models a backend that keeps every position: a [rows, prompt, vocab]
  tensor in the compute dtype). Within a layer, the largest working set is the MLP
  (gate, up and their product, 3 x intermediate in the compute dtype) or the attention (about 7 x
  q_dim with the repeated keys and values), plus a few hidden-size tensors.
- Attention: a left-padded batch gives SDPA a mask, which the memory-efficient kernel takes (the
  mask itself is rows x prompt^2 bytes, plus an additive copy in the compute dtype). A call without
  padding (a single row; a training batch, taken to be of equal lengths) has no mask, and a
  grouped-query model then asks SDPA for `enable_gqa`, which the memory-efficient kernel does not
  support: below Ampere (a T4 has no flash kernel) PyTorch falls back to its math kernel, which
  upcasts to fp32 and materialises the scores, heads x query x key x 4 bytes per row (8 with the
  softmax, 12 in training's backward). `flash_attention=True` (Ampere and later) leaves that out, as
  does a model without grouped KV heads.
- Training (`train.py`): the loss upcasts the kept logits to fp32 (`token_mean_loss`), and
  cross-entropy keeps an fp32 log-softmax for the backward pass: 12 bytes per token and vocabulary
  entry at the loss (compute-dtype logits + fp32 copy + fp32 log-softmax going forward; the
  log-softmax, its gradient and the input gradient coming back). Logits are kept from just before
  the first target on; `logit_tokens` defaults to the whole sequence (a Generator record, whose
  prompt is short). With gradient checkpointing each decoder layer keeps only its input; the
  backward pass recomputes one layer at a time, which then holds its saved activations (the fp32
  RMSNorm inputs, each LoRA module's fp32 copy of its input, the MLP's three intermediates, the
  attention's inputs) and the gradients being formed. Without checkpointing every layer keeps them.
- Overhead: a constant for the CUDA context, cuBLAS workspace and allocator slack
  (`OVERHEAD_GIB`). Fragmentation of a long run can take more; keep a margin.

Small tensors (biases, rotary tables, sampling state, position ids) are left out. The estimate is an
upper bound for the lengths given, not a measurement: check a new setting with
`torch.cuda.max_memory_allocated()` on the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30
NF4_BITS = 4 + 8 / 64 + 32 / (64 * 256)  # 4-bit codes + 8-bit absmax per 64 + fp32 absmax per 256 blocks
OVERHEAD_GIB = 0.75  # CUDA context, cuBLAS workspace, allocator slack
T4_GIB = 14.75  # the total capacity torch reports for a 16 GB T4 (15,835,398,144 bytes)
KV_SPARE = 256  # positions of room the generation cache (backends.GrowingLayer) adds when it is full
PROMPT_OVERHEAD = 256  # tokens of chat template and extension instruction around a query and a text
LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

MODELS: dict[str, dict] = {
    "Qwen/Qwen2.5-7B-Instruct": {
        "num_hidden_layers": 28, "hidden_size": 3584, "intermediate_size": 18944, "num_attention_heads": 28,
        "num_key_value_heads": 4, "head_dim": 128, "vocab_size": 152064, "tie_word_embeddings": False,
    },
    "meta-llama/Llama-3.1-8B-Instruct": {
        "num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256, "tie_word_embeddings": False,
    },
}

_KEYS = ("weights", "embeddings", "adapters", "optimizer", "kv_cache", "activations", "attention", "logits",
         "overhead")


@dataclass(frozen=True)
class Shape:
    """The sizes of a decoder-only transformer that the estimate needs."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of one decoder layer."""
        h, i = self.hidden, self.intermediate
        return {"q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim),
                "o_proj": (self.q_dim, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def shape(cfg) -> Shape:
    """A Shape from a transformers config, a dict of its keys, or a Shape."""
    if isinstance(cfg, Shape):
        return cfg

    def get(key, default=None):
        value = cfg.get(key, default) if isinstance(cfg, dict) else getattr(cfg, key, default)
        if value is None and default is None:
            raise ValueError(f"The model config has no '{key}'.")
        return value

    heads, hidden = int(get("num_attention_heads")), int(get("hidden_size"))
    return Shape(
        layers=int(get("num_hidden_layers")), hidden=hidden, intermediate=int(get("intermediate_size")),
        heads=heads, kv_heads=int(get("num_key_value_heads", heads) or heads),
        head_dim=int(get("head_dim", hidden // heads) or hidden // heads), vocab=int(get("vocab_size")),
        tied=bool(get("tie_word_embeddings", False)),
    )


def _targets(lora_targets) -> tuple[str, ...]:
    if lora_targets == "all-linear":
        return LINEAR
    names = (lora_targets,) if isinstance(lora_targets, str) else tuple(lora_targets)
    unknown = [n for n in names if n not in LINEAR]
    if unknown:
        raise ValueError(f"Unknown LoRA target(s) {unknown}; use 'all-linear' or names among {LINEAR}.")
    return names


def _breakdown(**parts: float) -> dict[str, float]:
    out = {k: parts.get(k, 0.0) / GIB for k in _KEYS}
    out["overhead"] = parts.get("overhead", OVERHEAD_GIB * GIB) / GIB
    out["total"] = sum(out.values())
    return out


# -- sizes ------------------------------------------------------------------------------------

def weight_bytes(cfg, quantization: str | None = "nf4", compute_dtype_bytes: int = 2) -> dict[str, float]:
    """Bytes of the decoder's linear layers ("linear") and of what stays unquantised ("embeddings":
    input embeddings, lm_head unless tied, norms)."""
    s = shape(cfg)
    linear = s.layers * sum(a * b for a, b in s.linear_shapes().values())
    if quantization == "nf4":
        linear_bytes = linear * NF4_BITS / 8
    elif quantization is None:
        linear_bytes = linear * compute_dtype_bytes
    else:
        raise ValueError(f"quantization={quantization!r}: use 'nf4' or None.")
    plain = s.vocab * s.hidden * (1 if s.tied else 2) + (2 * s.layers + 1) * s.hidden
    return {"linear": linear_bytes, "embeddings": plain * compute_dtype_bytes}


def lora_parameters(cfg, r: int = 8, lora_targets="all-linear") -> int:
    """Parameters of one LoRA adapter: r x (in + out) for each targeted linear layer of every layer."""
    s = shape(cfg)
    shapes = s.linear_shapes()
    return s.layers * sum(r * sum(shapes[name]) for name in _targets(lora_targets))


def kv_cache_bytes(cfg, batch: int, tokens: int, kv_bytes: int = 2) -> float:
    """2 (keys and values) x layers x kv_heads x head_dim x bytes x tokens x batch."""
    s = shape(cfg)
    return 2 * s.layers * s.kv_heads * s.head_dim * kv_bytes * tokens * batch


def kv_buffer_tokens(tokens: int, new: int = 0, spare: int = KV_SPARE) -> int:
    """Positions of the growing cache's buffer once `new` no longer fit after `tokens` filled ones.

    The rule `backends.GrowingLayer` grows by; with new = 0, its spare room at its largest.
    """
    return tokens + new + max(spare, tokens // 4)


def _math_attention(s: Shape, rows: int, q_len: int, k_len: int, bytes_per_score: int) -> float:
    """SDPA's math kernel: fp32 scores (and softmax, gradients) per head, plus its fp32 causal mask."""
    return rows * s.heads * q_len * k_len * bytes_per_score + q_len * k_len * 4


# -- generation -------------------------------------------------------------------------------

def generation_moments(
    cfg, batch: int, context_tokens: int, prompt_tokens: int | None = None, quantization: str | None = "nf4",
    compute_dtype_bytes: int = 2, lora_r: int = 8, lora_targets="all-linear", adapters: int = 2,
    flash_attention: bool = False, prefill_logits: str = "last", kv_bytes: int | None = None,
) -> dict[str, dict[str, float]]:
    """The peaks of generating `batch` rows of up to `context_tokens` positions (prompt + new tokens).

    "prefill": the first `batch` prompts of `prompt_tokens` (default: min(512, context)) go in at
    once, left-padded: their cache, and the larger of one layer's working set (with the padding mask)
    and the prompt logits. "decode": every row at the full context in the cache (with spare room),
    plus one layer's copy when the cache grows or rows leave. "refill": a slot freed near the cap
    takes one prompt while the other rows keep their cache: the prompt's prefill runs without a mask,
    so a grouped-query model without a flash kernel materialises its attention scores.
    """
    s, c = shape(cfg), compute_dtype_bytes
    kv_b = c if kv_bytes is None else kv_bytes
    prompt = min(512, context_tokens) if prompt_tokens is None else min(prompt_tokens, context_tokens)
    if prefill_logits not in ("all", "last"):
        raise ValueError("prefill_logits: 'last' (as HFBackend._prefill) or 'all' (every prompt position).")
    w = weight_bytes(s, quantization, c)
    static = {"weights": w["linear"], "embeddings": w["embeddings"],
              "adapters": adapters * lora_parameters(s, lora_r, lora_targets) * 4}
    h, i, q = s.hidden, s.intermediate, s.q_dim
    math = not flash_attention and s.kv_heads < s.heads

    def prefill(rows: int) -> dict[str, float]:
        """The larger of one layer's working set (inference) and the prompt logits."""
        tokens = rows * prompt
        mask = rows * prompt * prompt * (1 + c) if rows > 1 else 0.0  # left padding: the efficient kernel
        # no mask: enable_gqa, which only flash (Ampere+) or the math kernel serve
        scores = _math_attention(s, 1, prompt, prompt, 8) if rows == 1 and math else 0.0
        stream = tokens * 5 * c * h  # residual, hidden and normed states, a LoRA input copy
        in_mlp = {"activations": stream + tokens * 3 * c * i, "attention": mask}
        in_attn = {"activations": stream + tokens * 7 * c * q, "attention": mask + scores}
        layer = max(in_mlp, in_attn, key=lambda d: sum(d.values()))
        logits = (tokens if prefill_logits == "all" else rows) * s.vocab * c
        return layer if sum(layer.values()) >= logits else {"logits": logits}

    full = kv_cache_bytes(s, batch, kv_buffer_tokens(context_tokens), kv_b)
    moments = {
        "prefill": _breakdown(**static, kv_cache=kv_cache_bytes(s, batch, prompt, kv_b), **prefill(batch)),
        # one layer's cache copied (growth, rows leaving) + the last position's logits and sampling tensors
        "decode": _breakdown(**static, kv_cache=full, activations=full / s.layers + batch * s.vocab * (c + 9)),
    }
    if batch > 1:
        others = kv_cache_bytes(s, batch - 1, kv_buffer_tokens(context_tokens), kv_b)
        moments["refill"] = _breakdown(**static, kv_cache=others + kv_cache_bytes(s, 1, prompt, kv_b), **prefill(1))
    return moments


def generation_gib(cfg, batch: int, context_tokens: int, prompt_tokens: int | None = None,
                   quantization: str | None = "nf4", compute_dtype_bytes: int = 2, **kw) -> dict[str, float]:
    """Peak GPU memory (GiB) of generation: the breakdown of the largest moment of `generation_moments`.

    Keys: weights (quantised linear layers), embeddings (embeddings, lm_head, norms), adapters,
    optimizer (0 here), kv_cache, activations, attention, logits, overhead, and their total.
    """
    moments = generation_moments(cfg, batch, context_tokens, prompt_tokens, quantization, compute_dtype_bytes, **kw)
    return max(moments.values(), key=lambda m: m["total"])


# -- training ---------------------------------------------------------------------------------

def training_moments(
    cfg, seq_len: int, batch: int = 1, lora_r: int = 8, lora_targets="all-linear",
    gradient_checkpointing: bool = True, quantization: str | None = "nf4", compute_dtype_bytes: int = 2,
    adapters: int = 2, flash_attention: bool = False, logit_tokens: int | None = None,
) -> dict[str, dict[str, float]]:
    """The peaks of one training step on `batch` sequences of `seq_len` tokens (train.train_role).

    "loss": the logits of `logit_tokens` positions per sequence (default: all of them) at the loss,
    over the activations kept for the backward pass. "layer": the backward pass through one decoder
    layer: its saved activations, the gradients being formed and, with the math kernel, the
    attention scores with their softmax and gradients.
    """
    s, c = shape(cfg), compute_dtype_bytes
    n = batch * seq_len
    h, i, q, kv = s.hidden, s.intermediate, s.q_dim, s.kv_dim
    targets = _targets(lora_targets)
    shapes = s.linear_shapes()
    params = lora_parameters(s, lora_r, targets)
    w = weight_bytes(s, quantization, c)
    static = {"weights": w["linear"], "embeddings": w["embeddings"], "adapters": adapters * params * 4,
              "optimizer": params * (4 + 8)}  # the trained role: fp32 gradients and two AdamW states
    math = not flash_attention and s.kv_heads < s.heads

    def casts(names) -> int:  # each LoRA module keeps an fp32 copy of its input for lora_A's gradient
        return sum(4 * shapes[m][0] for m in names if m in targets)

    # per token: fp32 RMSNorm input, LoRA input copies, what the attention kernel keeps
    attn_saved = 4 * h + casts(LINEAR[:4]) + (12 * q if math else c * (4 * q + 2 * kv))
    mlp_saved = 4 * h + casts(LINEAR[4:]) + 3 * c * i  # gate out (SiLU input), SiLU out, up out
    grads_mlp, grads_attn = 4 * c * (i + h), 12 * q + 4 * h  # gradients formed in each half's backward
    tail = 4 * h + 3 * c * h  # final norm's fp32 input, lm_head input, the residual stream's gradients
    if gradient_checkpointing:  # each layer keeps its input; the backward recomputes one layer at a time
        kept = n * (s.layers * c * h + tail)
        in_mlp = n * (attn_saved + mlp_saved + grads_mlp)
        in_attn = n * (attn_saved + grads_attn)
        scores = _math_attention(s, batch, seq_len, seq_len, 12) if math else 0.0
    else:  # every layer keeps its activations (and, with the math kernel, its softmax)
        kept = n * (s.layers * (attn_saved + mlp_saved) + tail)
        kept += s.layers * (_math_attention(s, batch, seq_len, seq_len, 4) if math else 0.0)
        in_mlp, in_attn = n * grads_mlp, n * grads_attn
        scores = _math_attention(s, batch, seq_len, seq_len, 8) if math else 0.0
    layer = ({"activations": kept + in_mlp} if in_mlp >= in_attn + scores
             else {"activations": kept + in_attn, "attention": scores})
    logits = 12 * batch * (seq_len if logit_tokens is None else min(logit_tokens, seq_len)) * s.vocab
    return {
        "loss": _breakdown(**static, activations=kept, logits=logits),
        "layer": _breakdown(**static, **layer),
    }


def training_gib(cfg, seq_len: int, batch: int = 1, lora_r: int = 8, lora_targets="all-linear",
                 gradient_checkpointing: bool = True, **kw) -> dict[str, float]:
    """Peak GPU memory (GiB) of QLoRA training: the breakdown of the larger moment of `training_moments`.

    Keys as `generation_gib`; optimizer holds the trained role's gradients and AdamW states.
    """
    moments = training_moments(cfg, seq_len, batch, lora_r, lora_targets, gradient_checkpointing, **kw)
    return max(moments.values(), key=lambda m: m["total"])


# -- a preset ---------------------------------------------------------------------------------

def workloads(config) -> dict[str, dict]:
    """The longest generation and training calls of a run with this sltk Config.

    drafts: a query (at most `queries.max_new_tokens` tokens plus the template) and a text of up to
    `sampling.max_new_tokens` (M), or the evaluation's cap when longer. extension: stage 2 of a
    micro-round, whose prompt holds the current text (from the second micro-round on up to
    (1 + keep_fraction) x M, the kept part of a stage-1 output plus a stage-2 output) and the kept
    part pre-filled (keep_fraction x M), then writes up to M. training: `train.max_seq_len`.
    """
    m, kf = config.sampling.max_new_tokens, config.extend.keep_fraction
    overhead = PROMPT_OVERHEAD + config.queries.max_new_tokens
    current = (1 + kf) * m if config.extend.micro_rounds > 1 else m
    stage2 = overhead + int(current + kf * m)
    return {
        "drafts": {"prompt_tokens": overhead, "context_tokens": overhead + max(m, config.eval.max_new_tokens)},
        "extension": {"prompt_tokens": stage2, "context_tokens": stage2 + m},
        "training": {"seq_len": config.train.max_seq_len, "batch": config.train.batch_size},
    }


def fits(cfg_model, config, gpu_gib: float = T4_GIB, flash_attention: bool | None = None) -> dict:
    """Estimate each workload of `config` (an sltk Config) on a model and compare with `gpu_gib`.

    `flash_attention` defaults to True for bfloat16 compute (Ampere and later) and False otherwise.
    Returns {"rows": {workload: breakdown + its "moment"}, "workloads" (their lengths), "peak", "gpu_gib",
    "fits", "table"}.
    """
    s = shape(cfg_model)
    c = 4 if config.dtype == "float32" else 2
    flash = config.dtype == "bfloat16" if flash_attention is None else flash_attention
    common = {"quantization": config.quantization, "compute_dtype_bytes": c, "flash_attention": flash}
    lora = {"lora_r": config.lora.r, "lora_targets": config.lora.target_modules}
    w = workloads(config)
    moments = {
        "drafts": generation_moments(s, config.batch_size, w["drafts"]["context_tokens"],
                                     w["drafts"]["prompt_tokens"], **common, **lora),
        "extension": generation_moments(s, config.batch_size, w["extension"]["context_tokens"],
                                        w["extension"]["prompt_tokens"], **common, **lora),
        "training": training_moments(s, w["training"]["seq_len"], w["training"]["batch"], **lora,
                                     gradient_checkpointing=config.train.gradient_checkpointing, **common),
    }
    rows = {}
    for name, ms in moments.items():
        moment = max(ms, key=lambda k: ms[k]["total"])
        rows[name] = {**ms[moment], "moment": moment}
    peak = max(r["total"] for r in rows.values())
    result = {"rows": rows, "workloads": w, "peak": peak, "gpu_gib": gpu_gib, "fits": peak <= gpu_gib}
    result["table"] = format_table(result)
    return result


def format_table(result: dict) -> str:
    """A small text table of `fits`' result."""
    cols = ("weights", "embeddings", "adapters", "optimizer", "kv_cache", "activations", "attention", "logits",
            "overhead", "total")
    lines = [f"{'':10} {'moment':8} " + " ".join(f"{c[:8]:>8}" for c in cols)]
    for name, row in result["rows"].items():
        lines.append(f"{name:10} {row['moment']:8} " + " ".join(f"{row[c]:8.2f}" for c in cols))
    verdict = "fits" if result["fits"] else "does NOT fit"
    lines.append(f"peak {result['peak']:.2f} GiB of {result['gpu_gib']:.2f}: {verdict}")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m sltk.memory [preset] [gpu GiB]
    import sys

    from .config import preset

    name = sys.argv[1] if len(sys.argv) > 1 else "colab-t4"
    gpu = float(sys.argv[2]) if len(sys.argv) > 2 else T4_GIB
    for model, model_cfg in MODELS.items():
        print(f"{name} with {model}:\n{fits(model_cfg, preset(name), gpu)['table']}\n")
