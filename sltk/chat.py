"""What a generation request and its answer are, for every backend.

Both backends, the in-process `HFBackend` and the served `OpenAIBackend`, take `ChatRequest`s
with `Sampling` settings and return `Completion`s; this module holds those types, the checks a
request must pass, how a request becomes a prompt, and the seed of each request.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

STOP_STRINGS = ("---", "\n---", "\n\n---", "\n\n\n")
FINISH_REASONS = ("stop", "length", "repetition")

BASE = "base"  # the role of a request answered by the base model, with no adapter


class ModelError(ValueError):
    """A model id, path or setting that cannot be used; the message names the fix."""


def derive_seed(*parts) -> int:
    """A 31-bit seed from any parts, stable across processes (unlike hash())."""
    return random.Random("-".join(map(str, parts))).randrange(2**31)


def request_seeds(requests, seed: int | None) -> list[int]:
    """Each request's sampling seed: its own, else one from the call's seed and its position."""
    return [r.seed if r.seed is not None else (0 if seed is None else seed) * 1_000_003 + i
            for i, r in enumerate(requests)]


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of a call (upstream Self-Lengthen values by default)."""

    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    repetition_penalty: float = 1.1
    max_new_tokens: int = 16384
    stop: tuple[str, ...] = STOP_STRINGS
    # Stop a sequence that loops: `loop_tokens` positions whose `loop_ngram`-token n-gram already
    # occurred. Such a text fails the repetition filter anyway; 0 turns the guard off.
    loop_ngram: int = 16
    loop_tokens: int = 32

    def with_(self, **changes) -> Sampling:
        return replace(self, **changes)


@dataclass
class ChatRequest:
    """One generation: chat messages, an optional assistant pre-fill to continue, and a role."""

    messages: list[dict]
    prefill: str = ""
    role: str | None = None
    id: str | None = None
    max_new_tokens: int | None = None  # overrides the call's Sampling.max_new_tokens
    # Write at least this many tokens: before them the end token is never sampled and stop strings
    # do not end the text (transformers' `min_new_tokens`; `min_tokens` on a served vLLM).
    min_new_tokens: int = 0
    seed: int | None = None  # this request's own sampling seed (default: from the call's seed and its index)


@dataclass
class Completion:
    """Generated text (the part after any pre-fill), its token count and why it ended."""

    text: str
    tokens: int
    finish_reason: str
    prompt_tokens: int = 0
    id: str | None = None


class PromptError(ValueError):
    """A request that cannot be generated from (empty, or longer than the model's context)."""


def validate(request: ChatRequest) -> None:
    """Reject requests with no messages or an empty last message."""
    if not request.messages:
        raise PromptError(f"Request {request.id or ''} has no messages; give at least one user message.")
    for msg in request.messages:
        if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
            raise PromptError(f"Request {request.id or ''}: each message needs 'role' and 'content', got {msg!r}.")
    if not str(request.messages[-1]["content"]).strip():
        raise PromptError(f"Request {request.id or ''} has an empty {request.messages[-1]['role']} message.")


def render_prompt(tokenizer, request: ChatRequest) -> str:
    """The chat template applied to the messages, opened for the assistant, plus the pre-fill."""
    text = tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
    return text + request.prefill


def first_tokens(tokenizer, options: dict[str, list[str]]) -> dict[str, list[int]]:
    """The first token ids of each label's spellings, for a forced choice read from one position; refused
    when two labels share a first token, which one position cannot tell apart."""
    firsts = {label: sorted({tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words})
              for label, words in options.items()}
    shared = [label for label, ids in firsts.items()
              if any(set(ids) & set(other) for o, other in firsts.items() if o != label)]
    if shared:
        raise ValueError(f"choice_logprobs: the options {shared} begin with the same token, so one forward "
                         "pass cannot tell them apart; use spellings whose first tokens differ.")
    return firsts
