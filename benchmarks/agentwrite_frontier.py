"""The held-out frontier of an AgentWrite run: every Generator trained on its data, side by side.

    python benchmarks/agentwrite_frontier.py RUN_FOLDER [--out figures/]

Reads the answers already in `RUN_FOLDER/eval/` (the base, the control arm, and each adapter
`sltk agentwrite` or `sltk train --data ... --label NAME --eval` answered with), builds one
held-out table with paired bootstrap intervals (`sltk.heldout.table`), and writes
`agentwrite_frontier.md`/`.csv` beside them, plus two figures into `--out`: the growth ratios with
their intervals, and the length distribution of the AgentWrite texts beside the answers of the
base model and of the longest-writing Generator. Nothing is generated: the answers must be there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from sltk import heldout, plots, records
from sltk.analysis import markdown
from sltk.config import Config


def frontier(run: Path):
    """The held-out table of every model answered in `run/eval/`, base first, control second."""
    if not (run / "eval" / "base.jsonl").exists():
        raise SystemExit(f"{run / 'eval' / 'base.jsonl'} is missing: evaluate the run first (sltk agentwrite).")
    names = [p.stem for p in (run / "eval").glob("*.jsonl")]
    trained = {n: _training(run, n) for n in names if n not in (heldout.BASE, heldout.CONTROL)}
    order = [heldout.BASE, heldout.CONTROL] + sorted(trained, key=lambda n: (trained[n].get("epochs") or 0, n))
    answers = {n: records.read_jsonl(run / "eval" / f"{n}.jsonl") for n in order if n in names}
    cap = Config.load(run / "config.yaml").eval.max_new_tokens
    table = heldout.table(answers, cap)
    table.insert(1, "epochs", pd.array([trained.get(n, {}).get("epochs") for n in table["model"]], dtype="Int64"))
    table.insert(2, "final_loss", [round(trained[n]["final_loss"], 3) if trained.get(n, {}).get("final_loss")
                                   else None for n in table["model"]])
    table.insert(3, "texts", pd.array([trained.get(n, {}).get("texts") for n in table["model"]], dtype="Int64"))
    return table, answers


def _label(row) -> str:
    """A model's name on the figure: its epochs and training texts, for a trained one."""
    return row["model"] if pd.isna(row["epochs"]) else f"{row['epochs']} epochs\n{row['texts']} texts"


def _training(run: Path, name: str) -> dict:
    """What the adapter behind a model name was trained with (its sltk_train.json), if it is found."""
    for folder in (run / "trained" / name / "generator", run / "agentwrite" / "adapters" / "generator"):
        info = folder / "sltk_train.json"
        if info.exists() and (name == "agentwrite") == (folder.parent.name == "adapters"):
            data = json.loads(info.read_text())
            return {"epochs": data["config"]["epochs"], "final_loss": data.get("final_loss"),
                    "texts": data.get("examples")}
    return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="an AgentWrite run folder (runs/<name>)")
    parser.add_argument("--out", type=Path, default=None, help="where the figures go (default: <run>/figures)")
    args = parser.parse_args(argv)
    table, answers = frontier(args.run)
    table.to_csv(args.run / "eval" / "agentwrite_frontier.csv", index=False)
    (args.run / "eval" / "agentwrite_frontier.md").write_text(markdown(table))
    print(markdown(table))
    out = args.out or args.run / "figures"
    shown = table.assign(model=table.apply(_label, axis=1))
    plots.save(plots.growth_intervals(shown, "Held-out words against the base model (95% bootstrap)"),
               out / "agentwrite_heldout.png")
    best = table.iloc[table["mean"].idxmax()]
    longest = best["model"]
    data = [r["words"] for r in records.read_jsonl(args.run / "agentwrite" / "dataset.jsonl")]
    plots.save(plots.length_histograms({"AgentWrite texts": data,
                                        "base model's answers": [a["words"] for a in answers[heldout.BASE]],
                                        f"Generator ({_label(best).replace(chr(10), ', ')})": [
                                            a["words"] for a in answers[longest]]},
                                       "Words: the AgentWrite data and the held-out answers"),
               out / "agentwrite_lengths.png")
    print(f"figures: {out / 'agentwrite_heldout.png'}, {out / 'agentwrite_lengths.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
