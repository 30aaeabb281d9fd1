"""Benchmark evaluation of a run: the base model and each iteration's Generator (`sltk eval`).

Outputs are generated resumably into `<run>/bench/<benchmark>/<model>.jsonl` (finished ids are
skipped), then scored: LongBench-Write S_l per bucket, LonGen length following, Ruler lengths,
optionally an LLM judge (S_q, with its parse rate), and repetition along each answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import degradation, eval_sets, judge, records, scoring, text
from .config import JUDGE_MODES
from .judge import EVAL_SAMPLING, JUDGE_SAMPLING


@dataclass
class BenchmarkSettings:
    """What `sltk eval` scores: which benchmark file, which items, which models, with or without the judge."""

    benchmark: str  # a path, or a name found under $SLTK_EVAL_SETS
    subset: int | None = None  # the first N items after the filters
    max_length: int | None = None  # LongBench-Write/Ruler: keep required lengths below this
    lang: str | None = None  # keep items of this output language
    max_new_tokens: int = 2048
    models: tuple[str, ...] = ()  # "base", "generator_iter_<k>"; empty: base and every iteration
    judge: bool = False  # score quality with the run's base model as the judge (weak)
    seed: int = 0
    judge_tries: int = 5  # tries per item until its reply parses
    judge_max_new_tokens: int = JUDGE_SAMPLING.max_new_tokens
    # "sample": the judge writes its scores as JSON (tries until it parses); "choice": forced choice of
    # each score from the value probabilities (judge.judge_choice), for a judge too weak to write JSON
    judge_mode: str = "sample"


def select(items: list[dict], s: BenchmarkSettings) -> list[dict]:
    """The benchmark items to evaluate: language and length filters, then the first `subset`."""
    if s.lang:
        items = [i for i in items if i["lang"] == s.lang]
    if s.max_length:
        items = [i for i in items if "length" not in i or i["length"] < s.max_length]
    return items[: s.subset] if s.subset else items


def model_names(iterations: int, wanted=()) -> list[str]:
    names = [records.model_name(k) for k in range(iterations + 1)]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; this run has {names}")
    return [n for n in names if not wanted or n in wanted]


def generate(pipeline, names: list[str], items: list[dict], s: BenchmarkSettings,
             folder: Path) -> dict[str, list[dict]]:
    """Each model's answers to the items, in `<folder>/<model>.jsonl` (one shared batch; finished ids reused)."""
    from .heldout import answer_models

    return answer_models(pipeline, items, {n: folder / f"{n}.jsonl" for n in names},
                         EVAL_SAMPLING.with_(max_new_tokens=s.max_new_tokens), s.seed, "bench", folder.name)


def judged(pipeline, name: str, items: list[dict], outputs: list[dict], kind: str, out: Path,
           tries: int, max_new_tokens: int, mode: str = "sample") -> dict:
    """Judge scores of one model's outputs (the run's base model as judge), saved once to `out`."""
    if mode not in JUDGE_MODES:
        raise ValueError(f"judge mode {mode!r}: use {' or '.join(map(repr, JUDGE_MODES))}")
    if out.exists():
        result = judge.JudgeResult(kind, records.read_jsonl(out))
    else:
        pipeline.use_roles(0)
        answered = [{**i, "text": o["text"]} for i, o in zip(items, outputs)]
        if mode == "choice":
            result = judge.judge_choice(pipeline.backend, answered, kind)
        else:
            result = judge.judge(pipeline.backend, answered, kind,
                                 judge.JUDGE_SAMPLING.with_(max_new_tokens=max_new_tokens), retries=tries)
        records.write_jsonl(out, result.rows)
    return {"scores": result.scores, "parse_rate": result.parse_rate, "mode": mode}


def score_row(bench: str, name: str, items: list[dict], outputs: list[dict], quality: dict | None) -> dict:
    """One results row: lengths, the benchmark's length score, and quality when judged."""
    words = [text.count_words(o["text"]) for o in outputs]
    row = {"model": name, "n": len(items), "mean_words": round(sum(words) / max(len(words), 1), 1),
           "cap_hit": round(sum(o["finish"] == "length" for o in outputs) / max(len(outputs), 1), 3)}
    if bench == "longen":
        summary = scoring.longen_summary(items, outputs)
        row["length_score"] = round(summary["overall"], 1)
        row.update({f"score_{t}": round(v, 1) for t, v in summary["type"].items()})
    else:
        table = scoring.longbench_write_summary(items, outputs, quality["scores"] if quality else None)
        row["S_l"] = round(float(table.loc["overall", "S_l"]), 1)
        for group in table.index[1:]:
            if table.loc[group, "n"]:
                row[f"S_l {group}"] = round(float(table.loc[group, "S_l"]), 1)
        if quality:
            row["S_q"] = round(float(table.loc["overall", "S_q"]), 1)
            row["S"] = round(float(table.loc["overall", "S"]), 1)
    if quality and bench == "longen" and quality["scores"]:
        row["quality"] = round(scoring.longen_quality(quality["scores"].values())["quality"], 2)
    if quality:
        row["judge_parse_rate"] = round(quality["parse_rate"], 3)
        row["judge_mode"] = quality["mode"]
    return row


def run(pipeline, s: BenchmarkSettings) -> pd.DataFrame:
    """Generate, score and plot; write results.csv/.md and figures into `<run>/bench/<benchmark>/`."""
    from . import analysis, plots

    path = eval_sets.resolve(s.benchmark)
    bench = eval_sets.guess(path)
    items = select(eval_sets.load(path), s)
    if not items:
        raise ValueError(f"No item of {path} is left after the filters (lang={s.lang}, max_length={s.max_length}).")
    folder = pipeline.folder / "bench" / path.stem
    folder.mkdir(parents=True, exist_ok=True)
    kind = "longen" if bench == "longen" else "longbench_write"
    rows, outputs = [], {}
    names = model_names(pipeline.config.iterations, s.models)
    answers = generate(pipeline, names, items, s, folder)
    for name in names:
        outs = answers[name]
        judged_file = folder / f"{name}.judge{'_choice' if s.judge_mode == 'choice' else ''}.jsonl"
        quality = (judged(pipeline, name, items, outs, kind, judged_file, s.judge_tries, s.judge_max_new_tokens,
                          s.judge_mode) if s.judge else None)
        rows.append(score_row(bench, name, items, outs, quality))
        outputs[name] = [{**o, "lang": i["lang"]} for i, o in zip(items, outs)]
    table = pd.DataFrame(rows)
    table.to_csv(folder / "results.csv", index=False)
    (folder / "results.md").write_text(analysis.markdown(table))
    plots.save(plots.required_vs_produced(items, outputs, bench), folder / "required_vs_produced.png")
    if bench != "longen":
        plots.save(plots.score_by_bucket(items, outputs), folder / "S_l_by_bucket.png")
    if bench == "longwrite_ruler":  # how far each model follows each required length
        by_length = pd.concat({m: scoring.ruler_summary(items, o) for m, o in outputs.items()}, names=["model"])
        by_length.to_csv(folder / "ruler_by_length.csv")
    lang = items[0]["lang"] if len({i["lang"] for i in items}) == 1 else None
    curves = degradation.curves({m: o for m, o in outputs.items()}, lang=lang)
    plots.save(plots.degradation_curve(curves), folder / "degradation.png")
    degradation.summary(outputs, lang=lang).to_csv(folder / "degradation.csv")
    return table


def standin(pipeline, length: int = 500, n: int = 3) -> Path:
    """A small file in the LongBench-Write format made from the run's held-out prompts.

    For trying the evaluation where the official files are absent; its scores are no benchmark result.
    """
    path = pipeline.folder / "bench_standin" / "longbench_write_en.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    held = [r for f in pipeline.config.held_out for r in records.read_prompts(f)][:n]
    records.write_jsonl(path, [{"prompt": r["query"], "type": r.get("kind", "essay"), "length": length} for r in held])
    return path
