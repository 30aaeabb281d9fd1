"""Self-instruct query synthesis: the base model writes new writing instructions (METHOD 1.2.1).

Two seeds are shown as a pre-filled numbered list and the model completes the third item. A
candidate is kept when its length is within bounds, it duplicates nothing seen so far (other
queries, the seeds, the held-out evaluation prompts) and the base model judges it suitable for
a long text.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass, field

from . import prompts, records, text
from .chat import ChatRequest, Sampling, derive_seed
from .config import JUDGE_MODES, QueryConfig

_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)


def normalize(query: str) -> str:
    """Lower-case, punctuation removed, whitespace collapsed: the key for exact duplicates."""
    return " ".join(_PUNCT.sub(" ", query.lower()).split())


def shingles(query: str) -> set:
    """Word trigrams (English) or character trigrams (Chinese) of the normalised query."""
    norm = normalize(query)
    units = list(norm.replace(" ", "")) if text.detect_language(query) == "zh" else norm.split()
    if len(units) < 3:
        return {tuple(units)}
    return {tuple(units[i : i + 3]) for i in range(len(units) - 2)}


@dataclass
class Deduper:
    """Exact and near-duplicate detection (Jaccard similarity of trigram sets)."""

    threshold: float = 0.6
    exact: set = field(default_factory=set)
    sets: list = field(default_factory=list)
    index: dict = field(default_factory=lambda: defaultdict(set))

    def add(self, query: str) -> None:
        self.exact.add(normalize(query))
        s = shingles(query)
        k = len(self.sets)
        self.sets.append(s)
        for g in s:
            self.index[g].add(k)

    def is_duplicate(self, query: str) -> bool:
        if normalize(query) in self.exact:
            return True
        s = shingles(query)
        overlap: dict[int, int] = defaultdict(int)
        for g in s:
            for k in self.index.get(g, ()):
                overlap[k] += 1
        return any(n / len(s | self.sets[k]) >= self.threshold for k, n in overlap.items())


def candidate_requests(pool: list[str], seeds: list[int], lang: str, examples: int) -> list[ChatRequest]:
    """One self-instruct request per slot seed, each showing `examples` queries drawn from `pool`."""
    out = []
    for seed in seeds:
        shown = random.Random(seed).sample(pool, min(examples, len(pool)))
        messages, prefill = prompts.self_instruct_messages(shown, lang)
        out.append(ChatRequest(messages, prefill=prefill, role=None, seed=seed))
    return out


def synthesize_round(
    backend,
    pool: list[str],
    slot_seeds: list[int],
    lang: str,
    cfg: QueryConfig,
    sampling: Sampling,
    dedup: Deduper,
    log: list | None = None,
) -> tuple[list[str], dict]:
    """One try for each open slot (one seed each): generate, bound, deduplicate, judge.

    Returns the accepted queries (already added to `dedup`) and the counts of this round. With
    `log`, every candidate is appended to it with its outcome (empty, bounds, duplicate, judge_no,
    judge_unclear or accepted).
    """
    log = [] if log is None else log
    stop = (prompts.SELF_INSTRUCT_STOP[lang], *sampling.stop)
    gen = sampling.with_(max_new_tokens=cfg.max_new_tokens, stop=stop)
    outs = backend.generate(candidate_requests(pool, slot_seeds, lang, cfg.examples), gen, desc=f"queries ({lang})")
    stats = {"candidates": len(slot_seeds), "empty": 0, "bounds": 0, "duplicates": 0, "judged": 0, "judged_yes": 0,
             "judge_unclear": 0, "accepted": 0}
    survivors, this_round = [], Deduper(dedup.threshold)
    for out, seed in zip(outs, slot_seeds):
        q = prompts.parse_instruction(out.text, lang)
        words = text.count_words(q)
        if not q:
            stats["empty"] += 1
            log.append({"query": q, "outcome": "empty"})
        elif not cfg.min_words < words < cfg.max_words:
            stats["bounds"] += 1
            log.append({"query": q, "outcome": "bounds"})
        elif dedup.is_duplicate(q) or this_round.is_duplicate(q):
            stats["duplicates"] += 1
            log.append({"query": q, "outcome": "duplicate"})
        else:
            this_round.add(q)
            survivors.append((q, seed))
    queries = [q for q, _ in survivors]
    judge_seeds = [derive_seed(s, "judge") for _, s in survivors]
    verdicts = (suitable(backend, queries, lang, sampling, judge_seeds, mode=cfg.judge_mode, notes=stats) if cfg.judge
                else [True] * len(queries))
    accepted = []
    for (q, _), verdict in zip(survivors, verdicts):
        stats["judged"] += cfg.judge
        stats["judged_yes"] += bool(verdict) and cfg.judge
        stats["judge_unclear"] += verdict is None
        if verdict:
            dedup.add(q)
            accepted.append(q)
        outcome = "accepted" if verdict else "judge_unclear" if verdict is None else "judge_no"
        log.append({"query": q, "outcome": outcome})
    stats["accepted"] = len(accepted)
    return accepted, stats


JUDGE_OPTIONS = {
    "en": {"yes": ["yes", "Yes", "YES"], "no": ["no", "No", "NO"]},
    "zh": {"yes": ["是", "适合", "可以"], "no": ["否", "不"]},
}


def suitable(backend, queries: list[str], lang: str, sampling: Sampling | None = None,
             seeds: list[int] | None = None, mode: str = "sample", notes: dict | None = None) -> list[bool | None]:
    """The base model's yes/no verdict on each query's suitability for a long text (None: unclear).

    mode "sample" (upstream): the answer is sampled with the loop's settings and read as yes, no
    or unclear. mode "choice": a forced choice, yes when the first answer token is more likely
    yes than no; never unclear, which suits small models that ramble instead of answering. A server
    that returns no log-probabilities gets the sampled judge instead, said in `notes["judge_mode"]`.
    """
    if not queries:
        return []
    seeds = seeds or [derive_seed(q, "judge") for q in queries]
    reqs = [ChatRequest(prompts.judge_messages(q, lang), role=None, seed=s) for q, s in zip(queries, seeds)]
    if mode == "choice":
        from .served import LogprobsUnavailable

        try:
            scores = backend.choice_logprobs(reqs, JUDGE_OPTIONS[lang], desc="judge")
            return [s["yes"] > s["no"] for s in scores]
        except LogprobsUnavailable as exc:
            records.log.warning("sltk: the forced-choice judge falls back to the sampled one: %s", exc)
            if notes is not None:
                notes["judge_mode"] = "sample (the server returned no log-probabilities)"
    elif mode != "sample":
        raise ValueError(f"queries.judge_mode must be {' or '.join(map(repr, JUDGE_MODES))}, got {mode!r}")
    settings = (sampling or Sampling()).with_(max_new_tokens=8, stop=(), loop_tokens=0)
    outs = backend.generate(reqs, settings, desc="judge")
    return [prompts.parse_yes_no(o.text, lang) for o in outs]
