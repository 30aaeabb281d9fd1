"""Preference pairs: scoring, choice, and the format TRL's DPOTrainer reads."""

import json
import random

import pytest

from sltk import preference, records
from sltk.chat import Completion

ITEMS = [{"id": "p0", "query": "Write about rivers.", "lang": "en", "required": 30},
         {"id": "p1", "query": "Write about hills.", "lang": "en", "required": 30}]
GOOD = " ".join("w" + chr(97 + i // 26) + chr(97 + i % 26) for i in range(30)) + "."  # 30 distinct words
SHORT = "Too short."
LOOP = ("the same words again and again " * 8).strip() + "."


def samples():
    return {"p0": [{"id": f"p0-k{j}", "sample": j, "text": t} for j, t in enumerate([SHORT, GOOD, LOOP])],
            "p1": [{"id": f"p1-k{j}", "sample": j, "text": GOOD} for j in range(2)]}


def test_the_best_answer_is_chosen_and_ties_give_no_pair():
    pairs, stats = preference.pairs(ITEMS, samples(), random.Random(0))
    assert len(pairs) == 1 and stats["no_pair_all_equal"] == 1
    p = pairs[0]
    assert p["chosen"] == [{"role": "assistant", "content": GOOD}]
    assert p["rejected"][0]["content"] in (SHORT, LOOP)
    assert p["chosen_score"] > p["rejected_score"]
    assert stats["quality"].startswith("proxy")


def test_scores_combine_length_and_quality():
    exact = preference.score(ITEMS[0], GOOD, 100.0)
    assert exact["S_l"] == 100.0 and exact["score"] == 100.0
    assert preference.score(ITEMS[0], GOOD, 50.0)["score"] == 75.0
    assert preference.quality_proxy(LOOP) < 50 < preference.quality_proxy(GOOD) == 100.0
    assert preference.quality_proxy("no ending here") == 50.0
    judged, _ = preference.pairs(ITEMS, samples(), random.Random(0),
                                 quality={"p0-k0": 100, "p0-k1": 0, "p0-k2": 0, "p1-k0": 90, "p1-k1": 10})
    assert judged[1]["chosen"][0]["content"] == GOOD and judged[1]["chosen_score"] == 95.0


def test_required_lengths_are_written_into_prompts_that_have_none():
    items = preference.with_length([{"id": "a", "query": "Write a story"}, {"id": "b", "query": "Q", "length": 900}],
                                   [500])
    assert items[0]["query"] == "Write a story. Write around 500 words." and items[0]["required"] == 500
    assert items[1]["required"] == 900 and items[1]["query"] == "Q"
    with pytest.raises(ValueError, match="no 'length'"):
        preference.with_length([{"id": "a", "query": "Q"}], [])


class Echo:
    def __init__(self):
        self.calls = 0

    def generate(self, reqs, sampling, desc="", on_result=None):
        self.calls += 1
        outs = [Completion(f"answer {r.id} seed {r.seed}.", 4, "stop", 3, r.id) for r in reqs]
        for i in reversed(range(len(outs))):  # a continuous batch finishes out of order
            on_result(i, outs[i])
        return outs


def test_sampling_resumes_by_prompt_and_sample(tmp_path):
    path = tmp_path / "samples.jsonl"
    first = preference.sample(Echo(), ITEMS[:1], None, 2, None, 0, path)
    backend = Echo()
    again = preference.sample(backend, ITEMS, None, 2, None, 0, path)
    assert backend.calls == 1 and again["p0"] == first["p0"]
    assert sorted(r["id"] for r in records.read_jsonl(path)) == ["p0-k0", "p0-k1", "p1-k0", "p1-k1"]
    assert [r["id"] for r in again["p1"]] == ["p1-k0", "p1-k1"]


def test_pairs_load_in_trl_dpo_trainer(tmp_path, tokenizer):
    """The pairs file, read by `datasets`, is conversational for TRL and tokenised by a real DPOTrainer."""
    from conftest import tiny_model
    from datasets import load_dataset
    from trl import DPOConfig, DPOTrainer
    from trl.data_utils import is_conversational

    many = {f"p{i}": [{"id": f"p{i}-k{j}", "sample": j, "text": t} for j, t in enumerate([SHORT, GOOD])]
            for i in range(4)}
    items = [{**ITEMS[0], "id": f"p{i}"} for i in range(4)]
    pairs, _ = preference.pairs(items, many, random.Random(0))
    path = tmp_path / "pairs.jsonl"
    records.write_jsonl(path, pairs)
    dataset = load_dataset("json", data_files=str(path), split="train")
    assert {"prompt", "chosen", "rejected"} <= set(dataset.column_names)
    assert is_conversational(dataset[0])
    loaded = tiny_model(tokenizer)
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), per_device_train_batch_size=2, max_steps=1, report_to=[],
                     logging_steps=1, save_strategy="no", use_cpu=True)
    reference = tiny_model(tokenizer).model  # the same weights, frozen
    trainer = DPOTrainer(model=loaded.model, ref_model=reference, args=args, train_dataset=dataset,
                         processing_class=tokenizer)
    row = trainer.train_dataset[0]
    assert row["prompt_ids"] and row["chosen_ids"] and row["rejected_ids"]
    assert json.loads(path.read_text().splitlines()[0])["chosen"][0]["role"] == "assistant"
    trainer.train()  # one real DPO step on the pairs
    assert trainer.state.global_step == 1
