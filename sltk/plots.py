"""Figures of a run: length distributions, growth across iterations, filters, training loss.

Every function takes plain data (lists, DataFrames, a run folder), draws one matplotlib figure
with labelled axes, and returns it; `save` writes it as PNG. Notebooks and scripts share them.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

if not matplotlib.get_backend().lower().startswith(("module://", "nbagg", "widget", "ipympl")):
    matplotlib.use("Agg")  # no display needed outside a notebook
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from . import records  # noqa: E402


def save(fig, path: str | Path) -> Path:
    """Write `fig` as a PNG (folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def lengths(folder: str | Path) -> pd.DataFrame:
    """Word and token counts of every usable text of a run: one row per text.

    Columns: iteration, stage ("draft", "extended", "held-out"), model, words, tokens.
    """
    folder = Path(folder)
    rows = []
    for d in sorted(folder.glob("iter_*"), key=lambda p: int(p.name.split("_")[1])):
        k = int(d.name.split("_")[1])
        for stage, name in (("draft", "drafts.jsonl"), ("extended", "extended.jsonl")):
            for r in records.read_jsonl(d / name) if (d / name).exists() else []:
                if r.get("ok"):
                    rows.append({"iteration": k, "stage": stage, "model": f"iter {k}", "words": r["words"],
                                 "tokens": r.get("tokens")})
    for path in sorted((folder / "eval").glob("*.jsonl")) if (folder / "eval").exists() else []:
        name = path.stem
        k = records.model_iteration(name) if name.startswith("generator_iter_") else 0  # base, control, others
        for r in records.read_jsonl(path):
            rows.append({"iteration": k, "stage": "held-out", "model": name, "words": r["words"],
                         "tokens": r["tokens"]})
    return pd.DataFrame(rows, columns=["iteration", "stage", "model", "words", "tokens"])


def before_after(before: list[int], after: list[int], title: str, labels=("before", "after")):
    """Two overlaid word-count histograms, e.g. the drafts before and after length-biased sampling."""
    fig, ax = plt.subplots(figsize=(7, 4))
    top = max([*before, *after, 1])
    bins = list(range(0, top + top // 12 + 2, max(top // 12, 1)))
    ax.hist(before, bins=bins, alpha=0.5, label=f"{labels[0]} (n={len(before)})")
    ax.hist(after, bins=bins, alpha=0.7, label=f"{labels[1]} (n={len(after)})")
    ax.set(xlabel="length (words)", ylabel="texts", title=title)
    ax.legend()
    return fig


def distributions(df: pd.DataFrame, title: str = "Length by iteration and stage"):
    """Box plot per (model or iteration, stage) and the CDF of each, side by side."""
    fig, (box, cdf) = plt.subplots(1, 2, figsize=(12, 4.5))
    groups = [(f"{m}\n{s}", g["words"].tolist()) for (m, s), g in df.groupby(["model", "stage"], sort=False) if len(g)]
    if groups:
        box.boxplot([g for _, g in groups], tick_labels=[n for n, _ in groups], showmeans=True)
        box.tick_params(axis="x", labelrotation=30, labelsize=8)
    box.set(ylabel="length (words)", title=title)
    for name, values in groups:
        xs = sorted(values)
        cdf.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post", label=name.replace("\n", " "))
    cdf.set(xlabel="length (words)", ylabel="share of texts ≤ length", title="Cumulative distribution")
    if groups:
        cdf.legend(fontsize=8)
    fig.tight_layout()
    return fig


def growth_curve(table: pd.DataFrame, title: str = "Held-out length: base model and each iteration's Generator"):
    """Mean, median and p90 words per model (rows in order: base, iteration 1, ...)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    x = list(range(len(table)))
    for col, style in (("mean", "o-"), ("median", "s--"), ("p90", "^:")):
        ax.plot(x, table[col], style, label=col)
    ax.set_xticks(x, [str(m).replace("generator_", "") for m in table["model"]])
    ax.set(xlabel="model", ylabel="length (words)", title=title)
    ax.set_ylim(bottom=0)
    ax.legend()
    return fig


def step_rates(stats: list[dict], title: str = "Filter pass rates and extension acceptance"):
    """Per iteration: pass rate of each filter on drafts and extensions, and the extension acceptance."""
    rows = []
    for s in stats:
        for stage in ("drafts", "extension"):
            for name, rate in s[stage].get("pass_rate", {}).items():
                rows.append({"iteration": s["iteration"], "what": f"{stage}: {name}", "rate": rate})
        if s["extension"].get("acceptance_rate") is not None:
            rows.append({"iteration": s["iteration"], "what": "extension accepted",
                         "rate": s["extension"]["acceptance_rate"]})
    fig, ax = plt.subplots(figsize=(8, 4))
    if rows:
        pd.DataFrame(rows).pivot(index="iteration", columns="what", values="rate").plot.bar(ax=ax, rot=0)
    ax.set(xlabel="iteration", ylabel="share passing", title=title, ylim=(0, 1.05))
    ax.legend(fontsize=8, loc="lower right")
    return fig


def extension_ratios(df_ext: pd.DataFrame, title: str = "Extension growth ratio (words after / before)"):
    """Histogram of words(extended)/words(draft) per iteration for the accepted extensions."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, g in df_ext.groupby("iteration"):
        ax.hist(g["growth"], bins=12, alpha=0.6, label=f"iteration {k} (n={len(g)})")
    ax.axvline(1.0, color="gray", lw=1)
    ax.set(xlabel="growth ratio (×)", ylabel="extensions", title=title)
    ax.legend()
    return fig


def loss_curves(adapters: str | Path, title: str = "Training loss (token mean)"):
    """The per-step loss of each role trained in one iteration (`iter_<k>/adapters`)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for marker in sorted(Path(adapters).glob("*/sltk_train.json")):
        losses = json.loads(marker.read_text()).get("losses") or []
        if losses:
            ax.plot(range(1, len(losses) + 1), losses, label=marker.parent.name)
    ax.set(xlabel="optimizer step", ylabel="loss (nats per target token)", title=title)
    ax.legend()
    return fig


def required_vs_produced(items: list[dict], outputs: dict[str, list[dict]], bench: str = "longbench_write"):
    """Produced against required length per model, log axes, with the y = x line (as LongWriter draws it).

    LonGen items have an accepted interval: the required length is its middle.
    """
    from . import text

    fig, ax = plt.subplots(figsize=(6, 5))
    required = [(i["interval"][0] + i["interval"][1]) / 2 if "interval" in i else i["length"] for i in items]
    for model, outs in outputs.items():
        convention = "self-lengthen" if bench == "longen" else "longwriter"
        produced = [max(text.count_words(o["text"], convention), 1) for o in outs]
        ax.scatter(required, produced, s=14, alpha=0.7, label=model)
    lo, hi = min(required + [10]), max(required) * 1.5
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax.set(xscale="log", yscale="log", xlabel="required length (words)", ylabel="produced length (words)",
           title="Required vs produced length")
    ax.legend(fontsize=8)
    return fig


def score_by_bucket(items: list[dict], outputs: dict[str, list[dict]]):
    """LongBench-Write S_l per required-length bucket, one bar per model."""
    from . import scoring

    frames = []
    for model, outs in outputs.items():
        per = scoring.longbench_write_scores(items, outs)
        frames.append(per.groupby("bucket", sort=False)["S_l"].mean().rename(model))
    fig, ax = plt.subplots(figsize=(7, 4))
    pd.concat(frames, axis=1).plot.bar(ax=ax, rot=0)
    ax.set(xlabel="required length bucket (words)", ylabel="S_l (0-100)", title="Length score per bucket",
           ylim=(0, 100))
    return fig


def degradation_curve(curves: pd.DataFrame, column: str = "repeated_before"):
    """Mean share of repeated n-grams per position along the answers, one line per model."""
    fig, ax = plt.subplots(figsize=(7, 4))
    if len(curves):
        for model, part in curves.groupby("model", sort=False):
            mean = part.groupby("segment")[[column, "position"]].mean()
            ax.plot(mean["position"], mean[column], "o-", label=model)
    ax.set(xlabel="position in the answer (0 = start, 1 = end)", ylabel="share of repeated 10-grams",
           title="Where repetition sets in", ylim=(0, None))
    ax.legend()
    return fig


def growth_intervals(table: pd.DataFrame, title: str = "Held-out mean words against the base (95% bootstrap)"):
    """Each model's mean and median words as a multiple of the base's, with their intervals; 1.0 marked."""
    fig, ax = plt.subplots(figsize=(7, 4))
    x = list(range(len(table)))
    for col, shift, style in (("mean_x", -0.1, "o"), ("median_x", 0.1, "s")):
        lo, hi = table[f"{col}_lo"], table[f"{col}_hi"]
        ax.errorbar([i + shift for i in x], table[col], yerr=[table[col] - lo, hi - table[col]], fmt=style,
                    capsize=4, label=col.replace("_x", ""))
    ax.axhline(1.0, color="grey", lw=1, ls="--")
    ax.set_xticks(x, [str(m).replace("generator_", "") for m in table["model"]])
    ax.set(xlabel="model", ylabel="× the base model", title=title)
    ax.set_ylim(bottom=0)
    ax.legend()
    return fig


def length_histograms(named: dict[str, list[int]], title: str = "Length of the training texts"):
    """Overlaid word-count histograms, one per named group of texts."""
    fig, ax = plt.subplots(figsize=(7, 4))
    top = max([v for values in named.values() for v in values] + [1])
    bins = list(range(0, top + top // 15 + 2, max(top // 15, 1)))
    for name, values in named.items():
        ax.hist(values, bins=bins, alpha=0.55, label=f"{name} (n={len(values)})")
    ax.set(xlabel="length (words)", ylabel="texts", title=title)
    ax.legend()
    return fig
