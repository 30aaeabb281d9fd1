"""Held-out evaluation of Generators against the base model, with intervals that can resolve growth.

Every model answers the same prompts with the same seed per prompt, in one shared batch, so a
difference comes from the model. A request's text still depends a little on its batch-mates
(padding changes the arithmetic), so the table carries a control arm: an untrained adapter,
identical in weights to the base, answering beside it. Its ratio shows how far the batch alone
moves the numbers, and its interval should cover 1.0.

Ratios of mean and median words against the base come with paired bootstrap 95% intervals over
prompts. Also reported: cap hits, repetition and ending filter failures, and the repeated-10-gram
rate (the share of word positions that repeat an earlier 10-gram of the same answer).
"""

from __future__ import annotations

import contextlib
import random
import statistics
from pathlib import Path

from . import records, text
from .chat import BASE, ChatRequest, derive_seed
from .models import check_adapter

CONTROL = "control"  # an untrained adapter: the base's weights through the adapter path
AGENTWRITE = "agentwrite"  # the Generator trained on the run's AgentWrite data, once there is one
UNTRAINED = "untrained"


@contextlib.contextmanager
def adapters_loaded(loaded, adapters: dict[str, str | Path | None], lora=None):
    """Load each named adapter folder onto the model (UNTRAINED: a fresh adapter); removed afterwards.

    Yields {name: role name or None for the base}. The model must already be a PEFT model when any
    adapter is asked for (`models.add_roles`).
    """
    net = loaded.model
    added = []
    try:
        for name, folder in adapters.items():
            if folder is None:
                continue
            if not hasattr(net, "peft_config"):
                raise ValueError("Held-out adapters need a PEFT model: call models.add_roles(loaded) first.")
            if name in net.peft_config:
                raise ValueError(f"An adapter named {name!r} is already loaded; give the model another name.")
            if folder == UNTRAINED:
                net.add_adapter(name, lora or next(iter(net.peft_config.values())))
            else:
                check_adapter(folder)
                net.load_adapter(str(folder), adapter_name=name)
            added.append(name)
        yield {name: (name if folder is not None else None) for name, folder in adapters.items()}
    finally:
        for name in added:
            if name in getattr(net, "peft_config", {}):
                net.delete_adapter(name)


def answer(backend, roles: dict[str, str | None], items: list[dict], files: dict[str, Path], sampling, seed: int,
           tag: str, desc: str) -> dict[str, list[dict]]:
    """Answers of each model (name -> role, None for the base) to `items` ({"id", "query"}).

    All models answer in one shared batch, each answer appended to `files[name]` as it finishes; ids
    already there are skipped. The same seed per item for every model. Returns {name: answers in item
    order}.
    """
    done = {m: {r["id"]: r for r in records.read_jsonl(p, repair_tail=True, fields=records.ANSWER_FIELDS)}
            if p.exists() else {} for m, p in files.items()}
    jobs = [(m, i) for i in items for m in files if i["id"] not in done[m]]
    reqs = [ChatRequest([{"role": "user", "content": i["query"]}], role=roles[m], id=i["id"],
                        seed=derive_seed(seed, tag, i["id"])) for m, i in jobs]

    def save(index: int, o) -> None:
        m = jobs[index][0]
        new = {"id": o.id, "text": o.text, "tokens": o.tokens, "finish": o.finish_reason,
               "words": text.count_words(o.text)}
        records.append_jsonl(files[m], [new])
        done[m][o.id] = new

    if reqs:
        backend.generate(reqs, sampling, desc=desc, on_result=save)
    return {m: [done[m][i["id"]] for i in items] for m in files}


def bootstrap_ratio(base: list[float], other: list[float], stat=statistics.fmean, resamples: int = 2000,
                    seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """stat(other) / stat(base) and its paired bootstrap interval over prompts (percentile method)."""
    if len(base) != len(other) or not base:
        raise ValueError(f"paired samples needed: {len(base)} base and {len(other)} other values")
    point = stat(other) / max(stat(base), 1e-9)
    rng = random.Random(seed)
    n, ratios = len(base), []
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        ratios.append(stat([other[i] for i in idx]) / max(stat([base[i] for i in idx]), 1e-9))
    ratios.sort()
    lo = ratios[int((1 - level) / 2 * resamples)]
    hi = ratios[min(resamples - 1, int((1 + level) / 2 * resamples))]
    return point, lo, hi


def row(name: str, outputs: list[dict], cap: int, lang: str = "en") -> dict:
    """One model's lengths and failure shares on the held-out prompts."""
    from .analysis import describe

    words = [text.count_words(o["text"]) for o in outputs]
    n = max(len(outputs), 1)
    return {
        "model": name, "n": len(outputs), "mean": round(statistics.fmean(words), 1) if words else 0.0,
        "median": statistics.median(words) if words else 0,
        "p90": describe(words)["p90"],
        "cap_hit": round(sum(o["finish"] == "length" or o["tokens"] >= cap for o in outputs) / n, 3),
        "repetition_fail": round(sum(o["finish"] == "repetition" or text.has_repeated_ngram(o["text"], lang)
                                     for o in outputs) / n, 3),
        "ending_fail": round(sum(not text.ends_properly(o["text"], lang) for o in outputs) / n, 3),
        "rep10": round(statistics.fmean(text.repeated_ngram_rate(o["text"], lang) for o in outputs), 4)
        if outputs else 0.0,
    }


def table(outputs: dict[str, list[dict]], cap: int, base: str = BASE, lang: str = "en", seed: int = 0):
    """The growth table: one row per model, ratios of mean and median to the base with 95% intervals."""
    import pandas as pd

    if base not in outputs:
        raise ValueError(f"the table needs the base model's answers ({base!r}); got {sorted(outputs)}")
    base_words = [text.count_words(o["text"]) for o in outputs[base]]
    rows = []
    for name, outs in outputs.items():
        r = row(name, outs, cap, lang)
        words = [text.count_words(o["text"]) for o in outs]
        m, m_lo, m_hi = bootstrap_ratio(base_words, words, statistics.fmean, seed=seed)
        d, d_lo, d_hi = bootstrap_ratio(base_words, words, statistics.median, seed=seed)
        r.update(mean_x=round(m, 2), mean_x_lo=round(m_lo, 2), mean_x_hi=round(m_hi, 2),
                 median_x=round(d, 2), median_x_lo=round(d_lo, 2), median_x_hi=round(d_hi, 2))
        rows.append(r)
    return pd.DataFrame(rows)


# -- a run's held-out evaluation ---------------------------------------------------------------

def model_adapters(run, names: list[str], extra: dict[str, str | Path] | None = None) -> dict:
    """Adapter folder of each model name in a run (`sltk.Pipeline`): None for the base, an untrained
    one for the control arm, iteration k's Generator for generator_iter_<k>, or a folder in `extra`."""
    extra = extra or {}
    out = {}
    for name in names:
        if name in extra:
            out[name] = Path(extra[name])
        elif name == BASE:
            out[name] = None
        elif name == CONTROL:
            out[name] = UNTRAINED
        else:
            out[name] = run.iteration_dir(records.model_iteration(name)) / "adapters" / "generator"
    return out


def answer_models(run, items: list[dict], files: dict[str, Path], sampling, seed: int, tag: str, desc: str,
                  extra: dict[str, str | Path] | None = None) -> dict[str, list[dict]]:
    """A run's named models (see `model_adapters`) answering `items` in one shared batch, resumable by id."""
    adapters = model_adapters(run, list(files), extra)
    pending = any(not p.exists() or records.count(p) < len(items)
                  for p in files.values())
    if not pending:
        return answer(run.backend, {m: None for m in files}, items, files, sampling, seed, tag, desc)
    with run.models(adapters) as roles:
        return answer(run.backend, roles, items, files, sampling, seed, tag, desc)


def prompts_of(config) -> list[dict]:
    """The held-out prompts of a configuration (`held_out` files, the first `eval.prompts`)."""
    found = [r for f in config.held_out for r in records.read_prompts(f)]
    return found[: config.eval.prompts] if config.eval.prompts else found


def evaluate(run, extra: dict[str, str | Path] | None = None, folder: str | Path | None = None):
    """A run's held-out growth table: the base, the control arm, each iteration's Generator (and `extra`
    adapters by name) answering the held-out prompts in one shared batch; resumable by id. Written to
    `<run>/eval/` (or `folder`) as each model's answers, growth.csv and growth.md."""
    from .analysis import markdown

    c = run.config
    if AGENTWRITE not in (extra or {}) and (run.agentwrite_adapter / "adapter_config.json").exists():
        extra = {**(extra or {}), AGENTWRITE: run.agentwrite_adapter}  # every table of the run shows it
    items = prompts_of(c)
    sampling = c.sampling.with_(max_new_tokens=c.eval.max_new_tokens)
    names = [BASE] + ([CONTROL] if c.eval.control else [])
    names += [records.model_name(k) for k in range(1, c.iterations + 1)
              if (run.iteration_dir(k) / "adapters" / "generator").exists()] + list(extra or {})
    out = Path(folder) if folder else run.folder / "eval"
    paths = {name: out / f"{name}.jsonl" for name in names}
    key = "eval/answers" if folder is None else f"{out.relative_to(run.folder)}/answers"

    def step():
        answer_models(run, items, paths, sampling, c.seed, "eval", "eval", extra)
        return {"records": len(items) * len(paths), "models": len(paths)}

    if run.done(key) and any(not p.exists() for p in paths.values()):
        del run.manifest["steps"][key]  # a model was added since: answer for it
    run.run_step(key, step, tuple(paths.values()))
    answers = {name: records.read_jsonl(p, fields=records.ANSWER_FIELDS) for name, p in paths.items()}
    result = table(answers, sampling.max_new_tokens, seed=c.seed)
    result.to_csv(out / "growth.csv", index=False)
    (out / "growth.md").write_text(markdown(result))
    return result
