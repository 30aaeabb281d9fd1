"""How long can the embedded model's extensions get, and what does training on them give?

One iteration of `cpu-demo` with more queries, where the Extender gets only the drafts it can
lengthen (every passing draft of at most --max-draft-words, instead of length-biased sampling),
then the Generator is trained on the accepted extensions as in `cpu-demo` and answers the held-out
prompts beside the base model. Writes results/extension_ceiling.json; resumes a killed run.

    python benchmarks/extension_ceiling.py [--queries 48] [--max-draft-words 450] [--folder runs/ceiling]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sltk import heldout, records
from sltk.analysis import markdown
from sltk.config import preset
from sltk.pipeline import Pipeline

RESULTS = Path(__file__).resolve().parent / "results"


class ShortDrafts(Pipeline):
    """The pipeline with the drafts handed to the Extender chosen by length instead of sampled."""

    def __init__(self, *args, max_draft_words: int = 450, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_draft_words = max_draft_words

    def kept_drafts(self, k):
        drafts, _ = super().kept_drafts(k)
        return drafts, [d for d in drafts if d["words"] <= self.max_draft_words]


def summary(pipe: Pipeline, ceiling: int, table) -> dict:
    ext = records.read_jsonl(pipe.iteration_dir(1) / "extended.jsonl")
    rounds = [m for r in ext for m in r["rounds"]]
    passing = [m for m in rounds if not m["failed"]]
    over = [m for m in rounds if m["candidate_words"] > ceiling]
    accepted = [r for r in ext if r["ok"]]
    return {
        "drafts_passing": sum(r["ok"] for r in records.read_jsonl(pipe.iteration_dir(1) / "drafts.jsonl")),
        "drafts_extended": len({r["draft_id"] for r in ext}),
        "micro_rounds": len(rounds),
        "candidates_passing": len(passing),
        "longest_passing_words": max((m["candidate_words"] for m in passing), default=0),
        f"candidates_over_{ceiling}_words": len(over),
        "of_those_passing": sum(not m["failed"] for m in over),
        "their_failures": {f: sum(f in m["failed"] for m in over) for f in ("repetition", "ending", "meta")},
        "their_stage2_finish": {f: sum(m.get("stage2_finish") == f for m in over)
                                for f in ("repetition", "length", "stop")},
        "accepted": [{"draft_words": r["draft_words"], "words": r["words"]} for r in accepted],
        "held_out": table.to_dict(orient="records"),
        "seconds": {k: v.get("seconds") for k, v in pipe.manifest["steps"].items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=48)
    ap.add_argument("--max-draft-words", type=int, default=450)
    ap.add_argument("--ceiling", type=int, default=530, help="count the candidates longer than this")
    ap.add_argument("--folder", default="runs/ceiling")
    args = ap.parse_args()
    config = preset("cpu-demo", name="ceiling", iterations=1, **{"queries.per_iteration": args.queries})
    pipe = ShortDrafts(config, args.folder, max_draft_words=args.max_draft_words)
    pipe.iteration(1)
    table = heldout.evaluate(pipe)
    result = {"queries": args.queries, "max_draft_words": args.max_draft_words,
              **summary(pipe, args.ceiling, table)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "extension_ceiling.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "held_out"}, indent=1))
    print(markdown(table))


if __name__ == "__main__":
    main()
