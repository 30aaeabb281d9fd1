"""Preference pairs after SFT, as LongWriter made them (METHOD 2.3), in TRL's DPO format.

A trained Generator answers each prompt k times. Every answer is scored by S_l against the
prompt's required length combined with a quality score: the judge's S_q when a judge is given,
otherwise a proxy from the repetition and ending measures (said in the statistics). The best
answer is chosen and a random other one rejected. Pairs are written in TRL's conversational
preference format, one JSON a line:

    {"prompt": [{"role": "user", "content": ...}],
     "chosen": [{"role": "assistant", "content": ...}],
     "rejected": [{"role": "assistant", "content": ...}], "id": ..., "required": ..., ...}

which `datasets.load_dataset("json", ...)` reads and `trl.DPOTrainer` trains on as it is.
"""

from __future__ import annotations

import random
import statistics
from pathlib import Path

from . import records, scoring, sft, text
from .chat import ChatRequest, derive_seed

QUALITY_PROXY = "proxy: 100 x (1 - repeated-10-gram rate), halved when the text does not end properly"


def with_length(items: list[dict], lengths: list[int]) -> list[dict]:
    """Prompts that carry a required length: their own `length`, else one of `lengths` in turn, written
    into the query as "about N words"."""
    out = []
    for i, it in enumerate(items):
        lang = it.get("lang", "en")
        if it.get("length"):
            out.append({**it, "required": int(it["length"])})
            continue
        if not lengths:
            raise ValueError(f"Prompt {it['id']} has no 'length': give required lengths (e.g. --lengths 500,1000).")
        n = lengths[i % len(lengths)]
        out.append({**it, "query": sft.constrained_query(it["query"], sft.constraint_text("about", (n,), lang), lang),
                    "required": n})
    return out


def sample(backend, items: list[dict], role: str | None, k: int, sampling, seed: int, path: Path,
           desc: str = "samples") -> dict[str, list[dict]]:
    """k answers per prompt from `role`, each appended to `path` as it finishes (one record per
    (prompt, j)); resumable."""
    done = {r["id"]: r for r in records.read_jsonl(path, repair_tail=True)} if path.exists() else {}
    records.append_jsonl(path, [])
    jobs = [(it, j) for it in items for j in range(k) if f"{it['id']}-k{j}" not in done]
    reqs = [ChatRequest([{"role": "user", "content": it["query"]}], role=role, id=f"{it['id']}-k{j}",
                        seed=derive_seed(seed, "preference", it["id"], j)) for it, j in jobs]

    def save(index: int, o) -> None:
        it, j = jobs[index]
        new = {"id": o.id, "prompt_id": it["id"], "sample": j, "text": o.text, "tokens": o.tokens,
               "finish": o.finish_reason}
        records.append_jsonl(path, [new])
        done[o.id] = new

    if reqs:
        backend.generate(reqs, sampling, desc=desc, on_result=save)
    return {it["id"]: [done[f"{it['id']}-k{j}"] for j in range(k)] for it in items}


def quality_proxy(body: str, lang: str = "en") -> float:
    """0-100 from the repetition and ending measures, for when no judge scores quality."""
    if not body.strip():
        return 0.0
    q = 100.0 * (1.0 - text.repeated_ngram_rate(body, lang))
    return q if text.ends_properly(body, lang) else q / 2


def score(item: dict, body: str, quality: float) -> dict:
    """S_l of the answer against the prompt's required length, the quality, and their mean."""
    words = text.count_words(body, "longwriter") if item.get("lang", "en") == "en" else text.count_words(body)
    s_l = scoring.length_score(item["required"], words)
    return {"words": words, "S_l": round(s_l, 2), "quality": round(quality, 2),
            "score": round(scoring.combined_score(s_l, quality), 2)}


def pairs(items: list[dict], samples: dict[str, list[dict]], rng: random.Random,
          quality: dict[str, float] | None = None) -> tuple[list[dict], dict]:
    """Chosen (the best score) and rejected (a random other answer) per prompt; prompts whose answers all
    score the same give no pair. `quality` maps a sample id to a judge's 0-100 score (else the proxy)."""
    out, ties = [], 0
    scored_all = []
    for it in items:
        lang = it.get("lang", "en")
        scored = []
        for s in samples[it["id"]]:
            q = quality[s["id"]] if quality is not None else quality_proxy(s["text"], lang)
            scored.append({**s, **score(it, s["text"], q)})
        scored_all += scored
        best = max(scored, key=lambda s: (s["score"], -s["sample"]))
        others = [s for s in scored if s["id"] != best["id"] and s["score"] < best["score"]]
        if not others:
            ties += 1
            continue
        worse = rng.choice(others)
        out.append({
            "prompt": [{"role": "user", "content": it["query"]}],
            "chosen": [{"role": "assistant", "content": best["text"]}],
            "rejected": [{"role": "assistant", "content": worse["text"]}],
            "id": it["id"], "required": it["required"],
            "chosen_score": best["score"], "rejected_score": worse["score"],
            "chosen_words": best["words"], "rejected_words": worse["words"],
        })
    stats = {
        "prompts": len(items), "pairs": len(out), "no_pair_all_equal": ties,
        "quality": "judge" if quality is not None else QUALITY_PROXY,
        "mean_S_l": round(statistics.fmean(s["S_l"] for s in scored_all), 2) if scored_all else None,
        "mean_quality": round(statistics.fmean(s["quality"] for s in scored_all), 2) if scored_all else None,
        "chosen_minus_rejected": {
            key: round(statistics.fmean(p[f"chosen_{key}"] - p[f"rejected_{key}"] for p in out), 2) if out else None
            for key in ("score", "words")},
    }
    return out, stats
