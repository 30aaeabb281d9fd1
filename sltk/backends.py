"""Text generation behind one small interface.

`HFBackend` runs a Hugging Face model in process. It keeps a batch of up to `batch_size`
sequences decoding together; a sequence that finishes (end token, stop string, token cap, or a
loop detected by `RepetitionGuard`) leaves at once and a waiting request takes its slot, so one
runaway answer never holds the others back. Requests are chat messages with an optional
assistant pre-fill to continue, and the role (LoRA adapter) to use.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from . import faults, progress
from .chat import (
    BASE,
    FINISH_REASONS,
    ChatRequest,
    Completion,
    PromptError,
    Sampling,
    first_tokens,
    render_prompt,
    request_seeds,
    validate,
)
from .memory import KV_SPARE, kv_buffer_tokens
from .models import LoadedModel, torch_dtype, use_role

log = logging.getLogger("sltk")

ADAPTER_BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch
PREFILL_TOKENS = 2048  # padded prompt tokens per prefill forward (one longer prompt goes alone)


@dataclass
class RepetitionGuard:
    """Counts positions whose trailing n-gram of tokens already occurred in the sequence."""

    n: int
    limit: int
    seen: set = field(default_factory=set)
    repeats: int = 0

    def add(self, tokens: list[int]) -> bool:
        """Feed the sequence so far (the newest token last); True once it counts as a loop."""
        if self.limit <= 0 or len(tokens) < self.n:
            return False
        gram = tuple(tokens[-self.n :])
        if gram in self.seen:
            self.repeats += 1
        else:
            self.seen.add(gram)
        return self.repeats >= self.limit


class _Row:
    """One sequence being decoded."""

    __slots__ = ("index", "prompt_len", "max_new", "min_new", "tokens", "guard", "finish", "generator", "adapter")

    def __init__(self, index: int, prompt_len: int, max_new: int, guard: RepetitionGuard, generator,
                 adapter: str | None = None, min_new: int = 0):
        self.index, self.prompt_len, self.max_new, self.adapter = index, prompt_len, max_new, adapter
        self.min_new = min(min_new, max_new)
        self.tokens: list[int] = []
        self.guard = guard
        self.finish: str | None = None
        # One random stream per sequence: what it samples does not depend on its batch-mates.
        self.generator = generator


class GrowingLayer(DynamicLayer):
    """A cache layer that appends each step's keys and values into spare room.

    DynamicLayer concatenates, copying the layer's whole cache at every decoding step: with a
    batch of long prompts that copy, not the model, dominated the time on a CPU. Here the cache
    lives in a buffer with spare room; `keys`/`values` are views of its filled part, and assigning
    them (as batch selection and merging do) starts a new buffer.
    """

    SPARE = KV_SPARE  # decoding steps of room added when the buffer is full

    def __init__(self, kv_dtype: torch.dtype | None = None):
        super().__init__()
        self.kv_dtype = kv_dtype  # store keys and values in this dtype (None: the model's)

    def _get(self, which):
        buf = self.__dict__.get(which)
        return None if buf is None else buf[:, :, : self.__dict__[which + "_n"]]

    def _set(self, which, value):
        self.__dict__[which] = value
        self.__dict__[which + "_n"] = value.shape[-2] if value is not None and value.dim() == 4 else 0

    keys = property(lambda self: self._get("_k"), lambda self, v: self._set("_k", v))
    values = property(lambda self: self._get("_v"), lambda self, v: self._set("_v", v))

    def update(self, key_states, value_states, *args, **kwargs):
        if self.kv_dtype is not None:
            key_states, value_states = key_states.to(self.kv_dtype), value_states.to(self.kv_dtype)
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.__dict__["_k"].dim() != 4:  # first call: the prompt
            self.keys, self.values = key_states, value_states
            return self.keys, self.values
        new = key_states.shape[-2]
        for name, states in (("_k", key_states), ("_v", value_states)):
            buf, filled = self.__dict__[name], self.__dict__[name + "_n"]
            if filled + new > buf.shape[-2]:
                grown = buf.new_empty((*buf.shape[:2], kv_buffer_tokens(filled, new, self.SPARE), buf.shape[-1]))
                grown[:, :, :filled] = buf[:, :, :filled]
                self.__dict__[name] = buf = grown
            buf[:, :, filled : filled + new] = states
            self.__dict__[name + "_n"] = filled + new
        return self.keys, self.values


class GrowingCache(DynamicCache):
    """A DynamicCache made of `GrowingLayer`s, optionally stored in another dtype than the model's."""

    def __init__(self, kv_dtype: torch.dtype | None = None):
        Cache.__init__(self, layer_class_to_replicate=lambda: GrowingLayer(kv_dtype))


MIXED_SDPA = "sltk_sdpa"


def _mixed_sdpa(module, query, key, value, attention_mask, **kwargs):
    """SDPA that also takes a KV cache stored in a narrower dtype than the queries.

    At long contexts, reading the cache dominates a CPU decoding step; a bfloat16 cache under a
    float32 model halves that traffic while the weights and activations keep full precision.
    """
    dtype = query.dtype
    if key.dtype != dtype:
        query = query.to(key.dtype)
        if attention_mask is not None and attention_mask.dtype.is_floating_point:
            attention_mask = attention_mask.to(key.dtype)
    out, weights = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    return out.to(dtype), weights


AttentionInterface.register(MIXED_SDPA, _mixed_sdpa)
AttentionMaskInterface.register(MIXED_SDPA, sdpa_mask)


def _left_pad(t: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _prefill_groups(lengths: list[int], budget: int) -> list[list[int]]:
    """Consecutive indices grouped so that each group's rows x longest prompt stays within `budget`."""
    groups: list[list[int]] = []
    longest = 0
    for i, n in enumerate(lengths):
        if groups and (len(groups[-1]) + 1) * max(longest, n) <= budget:
            groups[-1].append(i)
            longest = max(longest, n)
        else:
            groups.append([i])
            longest = n
    return groups


def _merge_caches(caches: list, masks: list[torch.Tensor]):
    """Concatenate KV caches along the batch, left-padding the shorter ones in time; into the first."""
    if len(caches) == 1:
        return caches[0], masks[0]
    length = max(m.shape[1] for m in masks)
    for layers in zip(*(c.layers for c in caches)):
        keys = torch.cat([_left_pad(layer.keys, length, -2) for layer in layers], dim=0)
        values = torch.cat([_left_pad(layer.values, length, -2) for layer in layers], dim=0)
        layers[0].keys, layers[0].values = keys, values
    return caches[0], torch.cat([_left_pad(m, length, 1) for m in masks], dim=0)


def _select(cache, mask, keep: torch.Tensor):
    """Keep the rows `keep` of the batch, and drop leading columns that are padding for all of them."""
    mask = mask[keep]
    filled = mask.any(dim=0).nonzero()
    start = int(filled[0]) if len(filled) else 0
    mask = mask[:, start:]
    for layer in cache.layers:
        layer.keys = layer.keys[keep, :, start:]
        layer.values = layer.values[keep, :, start:]
    return cache, mask


class HFBackend:
    """In-process generation with a Hugging Face model (optionally with role adapters)."""

    def __init__(self, loaded: LoadedModel, batch_size: int = 32, progress: bool = True,
                 kv_dtype: str | torch.dtype | None = None, prefill_tokens: int = PREFILL_TOKENS):
        self.loaded = loaded
        self.prefill_tokens = prefill_tokens
        kv_dtype = torch_dtype(kv_dtype)
        # Only a cache narrower than the model needs the mixed-dtype attention.
        self.kv_dtype = kv_dtype if kv_dtype not in (None, loaded.dtype) else None
        self.tokenizer = loaded.tokenizer
        self.batch_size = batch_size
        self.oom_halvings = 0  # times an out-of-memory error halved the batch (it stays halved)
        self.progress = progress
        self.context = getattr(self.model.config, "max_position_embeddings", None) or 32768
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, (list, tuple)) else [eos]
        self.eos_ids = {int(e) for e in eos if e is not None} | {int(self.tokenizer.eos_token_id)}
        self.last_stats: dict = {}
        self._cache_kw: str | None = None

    @property
    def model(self):
        # Read through `loaded`: attaching roles later replaces the model by its PEFT wrapper.
        return self.loaded.model

    # -- public -------------------------------------------------------------------------------
    def generate(
        self,
        requests: list[ChatRequest],
        sampling: Sampling | None = None,
        seed: int | None = 0,
        desc: str = "generate",
        on_result: Callable[[int, Completion], None] | None = None,
    ) -> list[Completion]:
        """Generate for every request; results come back in the order of `requests`.

        `on_result(index, completion)` is called as each request finishes, so a caller can save each
        answer at once: a kill then loses only the requests in flight.
        """
        sampling = sampling or Sampling()
        prompts = self._encode(requests)
        caps = [(r.max_new_tokens, r.min_new_tokens) for r in requests]
        seeds = request_seeds(requests, seed)
        results: list[Completion | None] = [None] * len(requests)
        started, total_tokens = time.perf_counter(), 0
        self._steps = 0
        roles = [req.role or BASE for req in requests]
        mixed = len(set(roles)) > 1 and hasattr(self.model, "peft_config")
        # With adapters loaded, requests of different roles share one batch (PEFT picks each row's
        # adapter); otherwise one role at a time.
        groups: dict[str, list[int]] = {}
        if mixed:  # any adapter switched on; each row then names its own
            groups[next(r for r in roles if r != BASE)] = list(range(len(requests)))
        else:
            for i, role in enumerate(roles):
                groups.setdefault(role, []).append(i)
        adapters = [ADAPTER_BASE if r == BASE else r for r in roles] if mixed else None
        bar = progress.bar(len(requests), desc, enabled=self.progress)
        try:
            for role, indices in groups.items():
                while indices:
                    try:
                        with self._roles(role, mixed), self._attention(), torch.inference_mode():
                            for row in self._decode(indices, prompts, caps, seeds, sampling, adapters):
                                text = self._text(row.tokens, sampling.stop, row.min_new)
                                results[row.index] = Completion(
                                    text, len(row.tokens), row.finish, row.prompt_len, requests[row.index].id
                                )
                                total_tokens += len(row.tokens)
                                if bar is not None:
                                    elapsed = max(time.perf_counter() - started, 1e-9)
                                    bar.set_postfix_str(f"{total_tokens / elapsed:.1f} tok/s", refresh=False)
                                    bar.update(1)
                                if on_result is not None:
                                    on_result(row.index, results[row.index])
                        indices = []
                    except torch.cuda.OutOfMemoryError:
                        indices = [i for i in indices if results[i] is None]
                    if indices:  # out of memory; outside the except block the failed batch can be freed
                        self._halve_batch(len(indices))
        finally:
            if bar is not None:
                bar.close()
        self._record_stats(results, total_tokens, time.perf_counter() - started)
        faults.point(desc)
        return results  # type: ignore[return-value]

    def _encode(self, requests: list[ChatRequest]) -> list[list[int]]:
        """Each request's prompt tokens; one at or over the model's context is refused by id."""
        prompts = []
        for req in requests:
            validate(req)
            ids = self.tokenizer(render_prompt(self.tokenizer, req), add_special_tokens=False)["input_ids"]
            if len(ids) >= self.context:
                raise PromptError(
                    f"Request {req.id or ''} has {len(ids)} prompt tokens, at or over the model's "
                    f"context of {self.context}. Shorten the prompt or use a model with a longer context."
                )
            prompts.append(ids)
        return prompts

    def _record_stats(self, results: list[Completion], tokens: int, elapsed: float) -> None:
        self.last_stats = {
            "requests": len(results),
            "tokens": tokens,
            "seconds": elapsed,
            "tokens_per_second": tokens / elapsed if elapsed else 0.0,
            "decode_steps": self._steps,
            "finish_reasons": {r: sum(c.finish_reason == r for c in results) for r in FINISH_REASONS},
            "batch_size": self.batch_size,
            "oom_halvings": self.oom_halvings,
        }

    def _halve_batch(self, left: int) -> None:
        """Out of memory while decoding: go on with half the batch (the unfinished requests start again,
        each with its own seed, so what they write does not depend on the batch they land in)."""
        in_flight = min(self.batch_size, left)
        if in_flight <= 1:
            raise torch.cuda.OutOfMemoryError(
                "Out of memory with a batch of 1: lower sampling.max_new_tokens, use a smaller model, or "
                "quantization='nf4'.")
        self.batch_size = in_flight // 2
        self.oom_halvings += 1
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.warning("sltk: out of memory while generating; the batch is halved to %d and %d requests go on.",
                    self.batch_size, left)

    # -- internals ----------------------------------------------------------------------------
    def choice_logprobs(self, requests: list[ChatRequest], options: dict[str, list[str]],
                        desc: str = "score") -> list[dict[str, float]]:
        """For each request, the log-probability that the answer starts with each option.

        `options` maps a label to its spellings (e.g. {"yes": ["yes", "Yes"]}); a label's
        probability is the sum over the first tokens of its spellings, which must differ from the
        other labels'. One forward pass per request, no sampling: a forced choice between the labels.
        """
        firsts = first_tokens(self.tokenizer, options)
        return [{label: float(torch.logsumexp(logp[-1, ids], 0)) for label, ids in firsts.items()}
                for logp in self.next_token_logprobs(requests, 1, desc)]

    def next_token_logprobs(self, requests: list[ChatRequest], positions: int = 1,
                            desc: str = "score") -> list[torch.Tensor]:
        """For each request, the next-token log-probabilities at the last `positions` positions of
        its prompt (the pre-fill included): a (positions, vocabulary) float tensor on the CPU.

        Row -1 is the distribution after the whole prompt, row -2 the one before its last token, and
        so on. One forward pass per request, no sampling.
        """
        prompts = []
        for req in requests:
            validate(req)
            prompts.append(self.tokenizer(render_prompt(self.tokenizer, req), add_special_tokens=False)["input_ids"])
        short = [r.id or i for i, (r, p) in enumerate(zip(requests, prompts)) if len(p) < positions]
        if short:
            raise ValueError(f"next_token_logprobs: requests {short} have fewer than {positions} prompt tokens.")
        out: list[torch.Tensor] = []
        pad = self.tokenizer.pad_token_id
        bar = progress.bar(len(requests), desc, enabled=self.progress)
        with torch.inference_mode():
            for start in range(0, len(prompts), self.batch_size):
                chunk = prompts[start : start + self.batch_size]
                roles = {r.role or BASE for r in requests[start : start + self.batch_size]}
                if len(roles) > 1:
                    raise ValueError("one role per call of next_token_logprobs/choice_logprobs, got "
                                     + ", ".join(sorted(roles)))
                width = max(map(len, chunk))
                ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=self.loaded.device)
                mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=self.loaded.device)
                with use_role(self.model, roles.pop()):
                    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
                    logits = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                                        logits_to_keep=positions).logits.float()
                out.extend(logits.log_softmax(-1).cpu())
                if bar is not None:
                    bar.update(len(chunk))
        if bar is not None:
            bar.close()
        faults.point(desc)
        return out

    @contextlib.contextmanager
    def _roles(self, role: str, mixed: bool):
        """One role for the block; for a mixed batch also eval mode (PEFT refuses per-row adapters in training)."""
        training = self.model.training
        if mixed:
            self.model.eval()
        try:
            with use_role(self.model, role):
                yield
        finally:
            if mixed:
                self.model.train(training)

    @contextlib.contextmanager
    def _attention(self):
        """Switch the model to the mixed-dtype attention while a narrower KV cache is in use."""
        if self.kv_dtype is None:
            yield
            return
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        before = base.config._attn_implementation
        base.set_attn_implementation(MIXED_SDPA)
        try:
            yield
        finally:
            base.set_attn_implementation(before)

    def _text(self, tokens: list[int], stops: tuple[str, ...], min_new: int = 0) -> str:
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        # stop strings count only from where the row was allowed to stop
        start = len(self.tokenizer.decode(tokens[:min_new], skip_special_tokens=True)) if min_new else 0
        found = [i for i in (text.find(s, max(start - len(s) + 1, 0)) for s in stops if s) if i >= 0]
        return text[: min(found)] if found else text

    def _hit_stop(self, tokens: list[int], stops: tuple[str, ...]) -> bool:
        if not stops:
            return False
        tail = self.tokenizer.decode(tokens[-8:], skip_special_tokens=True)
        return any(s and s in tail for s in stops)

    def _next_tokens(self, logits: torch.Tensor, seen: torch.Tensor, s: Sampling, rows: list[_Row]) -> torch.Tensor:
        """Repetition penalty on tokens already in each sequence, then temperature, top-k, top-p."""
        logits = logits.float()
        early = [j for j, r in enumerate(rows) if len(r.tokens) < r.min_new]
        if early:  # rows still short of their minimum may not end
            eos = torch.tensor(sorted(self.eos_ids), device=logits.device)
            logits[torch.tensor(early, device=logits.device)[:, None], eos] = float("-inf")
        if s.repetition_penalty != 1.0:
            penalised = torch.where(logits > 0, logits / s.repetition_penalty, logits * s.repetition_penalty)
            logits = torch.where(seen, penalised, logits)
        if s.temperature <= 0:
            return logits.argmax(dim=-1)
        # Sample among the top-k candidates only: the same distribution as masking the whole
        # vocabulary, at a fraction of the cost (a full-vocabulary sort per step is slow on a CPU).
        k = s.top_k if 0 < s.top_k < logits.shape[-1] else logits.shape[-1]
        values, candidates = torch.topk(logits / s.temperature, k, dim=-1)
        if 0 < s.top_p < 1:
            probs = values.softmax(dim=-1)
            drop = probs.cumsum(dim=-1) - probs >= s.top_p  # keep the token that crosses top_p
            values = values.masked_fill(drop, float("-inf"))
        probs = values.softmax(dim=-1)
        choice = torch.stack([torch.multinomial(p, 1, generator=r.generator) for p, r in zip(probs, rows)])
        return candidates.gather(-1, choice).squeeze(-1)

    def _finished(self, row: _Row, token: int, s: Sampling) -> bool:
        if token in self.eos_ids:
            row.finish = "stop"
            return True
        row.tokens.append(token)
        if len(row.tokens) >= row.min_new and self._hit_stop(row.tokens, s.stop):
            row.finish = "stop"
        elif row.guard.add(row.tokens):
            row.finish = "repetition"
        elif len(row.tokens) >= row.max_new:
            row.finish = "length"
        return row.finish is not None

    def _prefill(self, rows: list[_Row], prompts, device):
        """Prefill `rows` in groups of at most `prefill_tokens` padded tokens: logits, caches, masks.

        One padded forward over many long prompts of unequal length is much slower on a CPU than
        the same prompts a few at a time (`benchmarks/generation.py prefill`), and its attention
        mask and scores grow with rows x width^2. The caller joins the groups' caches with those of the rows in flight.
        """
        parts = [self._prefill_group([rows[j] for j in group], prompts, device)
                 for group in _prefill_groups([len(prompts[r.index]) for r in rows], self.prefill_tokens)]
        return torch.cat([p[0] for p in parts]), [p[1] for p in parts], [p[2] for p in parts]

    def _prefill_group(self, rows: list[_Row], prompts, device):
        width = max(len(prompts[r.index]) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            p = prompts[r.index]
            ids[j, width - len(p) :] = torch.tensor(p)
            mask[j, width - len(p) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = GrowingCache(self.kv_dtype)
        # Only the last position's logits are needed: the rest would cost a vocabulary-wide
        # product and a (rows x tokens x vocabulary) tensor for nothing.
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
            logits_to_keep=1, **self._cache_arg(cache), **self._adapter_names(rows),
        )
        return out.logits[:, -1, :], cache, mask  # the model fills the cache in place

    def _cache_arg(self, cache) -> dict:
        """The cache keyword the model's forward takes: `cache` in current transformers,
        `past_key_values` in the releases before it (passing that one now warns of its removal)."""
        if self._cache_kw is None:
            model = self.model
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            params = inspect.signature(type(base).forward).parameters
            self._cache_kw = "cache" if "cache" in params else "past_key_values"
        return {self._cache_kw: cache}

    @staticmethod
    def _adapter_names(rows: list[_Row]) -> dict:
        return {"adapter_names": [r.adapter for r in rows]} if rows and rows[0].adapter else {}

    def _admit(self, rows: list[_Row], prompts, s: Sampling):
        """Prefill new rows; return their caches and masks (one per prefill group), seen-token table
        and first sampled tokens."""
        device = self.loaded.device
        logits, caches, masks = self._prefill(rows, prompts, device)
        seen = torch.zeros((len(rows), logits.shape[-1]), dtype=torch.bool, device=device)
        for j, r in enumerate(rows):
            seen[j, torch.tensor(prompts[r.index], device=device)] = True
        return caches, masks, seen, self._next_tokens(logits, seen, s, rows)

    def _generator(self, seed: int) -> torch.Generator:
        device = self.loaded.device if self.loaded.device != "mps" else "cpu"
        return torch.Generator(device=device).manual_seed(seed)

    def _decode(self, indices, prompts, caps, seeds, s: Sampling, adapters: list[str] | None = None):
        """Yield finished rows, keeping up to `batch_size` sequences in flight."""
        device = self.loaded.device
        # Longest prompts first: later, shorter ones fit inside the cache length already reached.
        pending = deque(sorted(indices, key=lambda i: -len(prompts[i])))
        active: list[_Row] = []
        cache = mask = seen = last = None
        while pending or active:
            if pending and len(active) < self.batch_size:
                new_rows = []
                while pending and len(active) + len(new_rows) < self.batch_size:
                    i = pending.popleft()
                    cap, floor = caps[i]
                    max_new = min(cap or s.max_new_tokens, self.context - len(prompts[i]))
                    guard = RepetitionGuard(s.loop_ngram, s.loop_tokens)
                    new_rows.append(_Row(i, len(prompts[i]), max_new, guard, self._generator(seeds[i]),
                                         adapters[i] if adapters else None, floor))
                new_caches, new_masks, new_seen, tokens = self._admit(new_rows, prompts, s)
                if cache is None:
                    cache, mask = _merge_caches(new_caches, new_masks)
                    seen, last = new_seen, tokens
                else:
                    cache, mask = _merge_caches([cache, *new_caches], [mask, *new_masks])
                    seen, last = torch.cat([seen, new_seen]), torch.cat([last, tokens])
                first = len(active)  # only the new rows got a token this round
                active.extend(new_rows)
            else:
                mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
                out = self.model(
                    input_ids=last.unsqueeze(-1),
                    attention_mask=mask,
                    position_ids=mask.sum(-1, keepdim=True) - 1,
                    use_cache=True,
                    **self._cache_arg(cache),
                    **self._adapter_names(active),
                )
                first = 0  # the model extended `cache` in place
                self._steps += 1
                last = self._next_tokens(out.logits[:, -1, :], seen, s, active)
            rows = torch.arange(first, len(active), device=device)
            seen[rows, last[first:]] = True
            done = [False] * first + [
                self._finished(r, t, s) for r, t in zip(active[first:], last[first:].tolist())
            ]
            if any(done):
                yield from (r for r, d in zip(active, done) if d)
                active = [r for r, d in zip(active, done) if not d]
                if active:
                    keep = torch.tensor([j for j, d in enumerate(done) if not d], device=device)
                    cache, mask = _select(cache, mask, keep)
                    seen, last = seen[keep], last[keep]
                else:
                    cache = mask = seen = last = None
