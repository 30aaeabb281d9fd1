"""Drafts, length-biased selection and the two-stage extension with micro-rounds (METHOD 1.2.2-1.2.4).

Each function works on a batch of work items so the backend can keep its batch full; the
pipeline feeds it chunks and writes what comes back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from . import prompts, text
from .chat import ChatRequest, Sampling, derive_seed
from .config import ExtendConfig

TOKENS_PER_WORD = 1.3  # English, for the embedded tokenizer and most others


def draft_round(
    backend, items: list[dict], role: str | None, sampling: Sampling, filters=text.FILTERS, desc: str = "drafts"
) -> list[dict]:
    """One try at a draft for each item ({"id", "query", "lang", "seed"}): the raw query as the user message.

    Returns one outcome per item: the text, its word count, token count, finish reason and the
    names of the failed filters (empty when the draft is usable).
    """
    reqs = [ChatRequest([{"role": "user", "content": it["query"]}], role=role, id=it["id"], seed=it.get("seed"))
            for it in items]
    outs = backend.generate(reqs, sampling, desc=desc)
    return [outcome(o.text, it["lang"], o.tokens, o.finish_reason, filters) for it, o in zip(items, outs)]


def outcome(body: str, lang: str, tokens: int, finish: str, filters=text.FILTERS) -> dict:
    """A generated text with its counts and the filters (among `filters`) it fails."""
    failed = [f for f in text.check_filters(body, lang) if f in filters] if body.strip() else ["empty"]
    if finish == "repetition" and "repetition" in filters and "repetition" not in failed:
        failed.append("repetition")
    return {"text": body, "words": text.count_words(body), "tokens": tokens, "finish": finish, "failed": failed}


def select_by_length(records: list[dict], rng: random.Random) -> list[dict]:
    """Length-biased sampling by word count: short texts are dropped more often (METHOD 1.2.3)."""
    ordered = sorted(records, key=lambda r: r["id"])  # independent of the order records were written
    kept = text.length_biased_sample([r["words"] for r in ordered], rng)
    return [ordered[i] for i in kept]


@dataclass
class Attempt:
    """The state of one extension attempt across its micro-rounds."""

    item: dict
    cur: str
    best: str
    rounds: list = field(default_factory=list)


def extension_round(
    backend, items: list[dict], role: str | None, cfg: ExtendConfig, sampling: Sampling, filters=text.FILTERS,
    trace: bool = False,
) -> list[dict]:
    """One try of an extension attempt for each item ({"id", "query", "lang", "text": the draft, "seed"}).

    Up to `cfg.micro_rounds` micro-rounds, batched across items. In each: stage 1 extends the
    first half of the current text; its first two thirds are kept and pre-filled into stage 2,
    which sees the whole current text and continues. The candidate replaces the current text
    when it passes the filters and is longer than the best so far; with `cfg.salvage`, a candidate
    that fails them may instead be cut back to its clean start (`text.clean_prefix`), which must then
    pass them and be longer. With `trace`, each micro-round also keeps its texts (first half, stage 1,
    kept part, stage 2, candidate, salvaged text) to show the steps.
    """
    attempts = [Attempt(it, it["text"], it["text"]) for it in items]
    for r in range(cfg.micro_rounds):
        live = [a for a in attempts if text.first_half(a.cur).strip()]
        if not live:
            break
        stage1 = [
            ChatRequest([{"role": "user", "content": prompts.extension_prompt(a.item["query"], text.first_half(a.cur),
                                                                            a.item["lang"])}], role=role,
                        seed=_sub_seed(a.item, r, 1), max_new_tokens=_stage_cap(text.first_half(a.cur), cfg, sampling))
            for a in live
        ]
        outs1 = backend.generate(stage1, sampling, desc=f"extend {r + 1}/{cfg.micro_rounds} stage 1")
        kept = [keep_fraction(_clean(o.text, a.item["lang"], cfg, head=True), cfg.keep_fraction)
                for a, o in zip(live, outs1)]
        stage2 = [
            ChatRequest([{"role": "user", "content": prompts.extension_prompt(a.item["query"], a.cur, a.item["lang"])}],
                        prefill=k + "\n\n" if k else "", role=role, seed=_sub_seed(a.item, r, 2),
                        max_new_tokens=_stage_cap(a.cur, cfg, sampling), min_new_tokens=_stage2_floor(a.cur, k, cfg))
            for a, k in zip(live, kept)
        ]
        outs2 = backend.generate(stage2, sampling, desc=f"extend {r + 1}/{cfg.micro_rounds} stage 2")
        for a, k, o1, o2 in zip(live, kept, outs1, outs2):
            _take(a, k, o1, o2, cfg, filters, trace)
    results = []
    for a in attempts:
        draft_words = text.count_words(a.item["text"])
        best_words = text.count_words(a.best)
        results.append({
            "text": a.best, "words": best_words, "draft_words": draft_words,
            "growth": best_words / max(draft_words, 1), "rounds": a.rounds,
            "ok": best_words > cfg.min_growth * draft_words,
        })
    return results


def _take(a: Attempt, kept: str, o1, o2, cfg: ExtendConfig, filters, trace: bool) -> None:
    """Judge one micro-round's candidate (the kept part of stage 1, then stage 2): it becomes the
    attempt's text when it passes the filters and is longer than the best so far (or its salvaged
    clean start does). The round is logged on the attempt."""
    # stage 2 continues the pre-fill: only its closing lines can be a sign-off
    tail = _clean(o2.text, a.item["lang"], cfg, head=not kept)
    candidate = (kept + "\n\n" + tail if kept else tail).strip()
    failed = outcome(candidate, a.item["lang"], o2.tokens, o2.finish_reason, filters)["failed"]
    words, best_words = text.count_words(candidate), text.count_words(a.best)
    salvaged = _salvage(candidate, failed, a.item["lang"], filters) if cfg.salvage else ""
    accepted = (not failed and words > best_words) or text.count_words(salvaged) > best_words
    a.rounds.append({"stage1_words": text.count_words(o1.text), "kept_words": text.count_words(kept),
                     "candidate_words": words, "failed": failed, "accepted": accepted,
                     "stage2_finish": o2.finish_reason})
    if salvaged:
        a.rounds[-1]["salvaged_words"] = text.count_words(salvaged)
    if trace:
        a.rounds[-1].update(first_half=text.first_half(a.cur), stage1=o1.text, kept=kept, stage2=o2.text,
                            candidate=candidate, **({"salvaged": salvaged} if salvaged else {}))
    if accepted:
        a.cur = a.best = salvaged if failed else candidate


def _stage_cap(source: str, cfg: ExtendConfig, sampling: Sampling) -> int | None:
    """New tokens allowed to a stage: `cfg.stage_cap` times the (estimated) tokens of its input text."""
    if not cfg.stage_cap:
        return None
    # 1.5 tokens a word leaves room over the usual 1.3
    return min(int(cfg.stage_cap * 1.5 * text.count_words(source)) + 64, sampling.max_new_tokens)


def _stage2_floor(cur: str, kept: str, cfg: ExtendConfig) -> int:
    """Tokens stage 2 must write so the candidate reaches `cfg.stage2_min_growth` times the current words."""
    if not cfg.stage2_min_growth:
        return 0
    missing = cfg.stage2_min_growth * text.count_words(cur) - text.count_words(kept)
    return max(int(TOKENS_PER_WORD * missing), 0)


def _salvage(candidate: str, failed: list[str], lang: str, filters) -> str:
    """A failed candidate cut back to its clean start, if that passes the filters ("" if not)."""
    if not failed:
        return ""
    trimmed = text.clean_prefix(candidate, lang, ending="ending" in filters)
    return "" if outcome(trimmed, lang, 0, "stop", filters)["failed"] else trimmed


def _clean(body: str, lang: str, cfg: ExtendConfig, head: bool) -> str:
    if not cfg.strip_meta or not body.strip():
        return body.strip()
    return text.strip_meta_lines(body, lang, head=head, tail=True)


def _sub_seed(item: dict, micro_round: int, stage: int) -> int | None:
    """The seed of one generation call of an attempt, derived from the attempt's own seed."""
    if item.get("seed") is None:
        return None
    return derive_seed(item["seed"], micro_round, stage)


def keep_fraction(body: str, fraction: float) -> str:
    """The first ⌊fraction·n⌋ units (paragraphs, or lines when there are few) of a text."""
    units, sep = text.split_units_with_sep(body)
    return text.join_units(units[: int(fraction * len(units) + 1e-9)], sep)
