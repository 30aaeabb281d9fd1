"""Train the tiny model's Generator on test_train's records, in as many processes as `accelerate launch` starts.

`python tests/train_processes.py OUT GRAD_ACCUM [STOP_AFTER]`: the adapter goes to OUT (written by
the main process), each process's statistics to `OUT.stats-<rank>.json`. Run by test_distributed,
under `accelerate launch --num_processes 2`.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import tiny_model  # noqa: E402
from test_train import RECORDS  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from sltk import embedded  # noqa: E402
from sltk.models import add_roles, lora_config  # noqa: E402
from sltk.train import TrainConfig, train_role  # noqa: E402


def config(grad_accum: int) -> TrainConfig:
    """The same settings on one process (grad_accum 2) and on two (grad_accum 1): the same global batch."""
    return TrainConfig(epochs=2, lr=1e-2, batch_size=1, grad_accum=grad_accum, log_every=0, seed=3)


def model(tokenizer):
    return add_roles(tiny_model(tokenizer), lora_config(r=4, alpha=8, dropout=0.0))


if __name__ == "__main__":
    out, accum = Path(sys.argv[1]), int(sys.argv[2])
    stop = int(sys.argv[3]) if len(sys.argv) > 3 else None
    tokenizer = AutoTokenizer.from_pretrained(embedded.model_dir())
    stats = train_role(model(tokenizer), "generator", RECORDS, out, config(accum), progress=False,
                       stop_after_steps=stop)
    rank = os.environ.get("RANK", "0")
    (out.parent / f"{out.name}.stats-{rank}.json").write_text(json.dumps(stats))
