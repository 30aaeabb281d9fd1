"""Judge prompts, the tolerant score parser, and the retry loop against a scripted backend."""

import json
import math

import pytest
import torch

from sltk.backends import HFBackend
from sltk.chat import ChatRequest, Completion, render_prompt
from sltk.judge import JUDGE_SAMPLING, KINDS, ParseError, judge, judge_choice, judge_prompt, parse_scores
from sltk.scoring import LBW_DIMENSIONS, LONGEN_CRITERIA, lbw_quality

GOOD = {"Relevance": 4, "Accuracy": 3, "Coherence": 5, "Clarity": 4, "Breadth and Depth": 2, "Reading Experience": 3}


def lbw(text: str) -> dict:
    return parse_scores(text, "longbench_write")


# --------------------------------------------------------------------------- prompts


def test_prompts_name_every_key_and_ignore_length():
    for kind, rubric in KINDS.items():
        prompt = judge_prompt(kind, "Write about tea.", "Tea is a drink.")
        assert "Write about tea." in prompt and "Tea is a drink." in prompt
        assert all(f'"{key}"' in prompt for key in rubric.keys)
        assert "length" in prompt.lower() and "JSON" in prompt
    assert "strict" in judge_prompt("longbench_write", "q", "a").lower()
    assert "(empty response)" in judge_prompt("longen", "q", "  ")
    with pytest.raises(ValueError, match="unknown judge kind"):
        judge_prompt("mmlu", "q", "a")


def test_judge_sampling_has_no_stop_strings():
    # the analysis may contain "---" or blank lines; a stop string would cut the JSON off
    assert JUDGE_SAMPLING.stop == () and JUDGE_SAMPLING.temperature == 0.5


# --------------------------------------------------------------------------- parsing


def test_plain_json():
    assert lbw(json.dumps(GOOD)) == GOOD


@pytest.mark.parametrize("text", [
    "Analysis: solid but shallow.\n```json\n" + json.dumps(GOOD, indent=2) + "\n```\nThat is all.",
    "The piece is fine.\n" + json.dumps(GOOD) + "\nHope this helps!",
    "```\n" + json.dumps(GOOD) + "\n```",
    "{'Relevance': 4, 'Accuracy': 3, 'Coherence': 5, 'Clarity': 4, 'Breadth and Depth': 2, "
    "'Reading Experience': 3,}",
    '{"relevance": 4, "ACCURACY": 3, "coherence ": 5, "Clarity": 4, "breadth_and_depth": 2, "reading-experience": 3}',
    '{"Relevance": "4", "Accuracy": "3/5", "Coherence": 5.0, "Clarity": "4 points", "Breadth & Depth": 2, '
    '"ReadingExperience": 3}',
    "{Relevance: 4, Accuracy: 3, Coherence: 5, Clarity: 4, Breadth and Depth: 2, Reading Experience: 3}",
    '{"scores": ' + json.dumps(GOOD) + ', "analysis": "ok"}',
    json.dumps({k: {"score": v, "reason": "because"} for k, v in GOOD.items()}),
    "“Relevance”: 4 is how I see it. {“Relevance”: 4, “Accuracy”: 3, “Coherence”: 5, “Clarity”: 4, "
    "“Breadth and Depth”: 2, “Reading Experience”: 3}",
    # the template first, then the answer: the last object wins
    'Format: {"Relevance": <1-5>, ...}\nMy scores: ' + json.dumps(GOOD),
    # cut off before the closing brace
    "Analysis.\n" + json.dumps(GOOD)[:-1],
    '{"Relevance": 4, "Accuracy": 3, "Coherence": 5, "Clarity": 4, "Breadth and Depth": 2, '
    '"Reading Experience": 3, "comment": "it\'s good, isn\'t it"}',
])
def test_tolerant_parsing(text):
    assert lbw(text) == GOOD


@pytest.mark.parametrize("text, match", [
    ("No scores here.", "no JSON"),
    (json.dumps({**GOOD, "Clarity": 6}), "outside 1–5"),
    (json.dumps({**GOOD, "Clarity": 0}), "outside 1–5"),
    (json.dumps({**GOOD, "Clarity": "4/10"}), "another scale"),
    (json.dumps({**GOOD, "Clarity": 3.5}), "not an integer"),
    (json.dumps({**GOOD, "Clarity": "good"}), "not a score"),
    (json.dumps({**GOOD, "Clarity": True}), "cannot be"),
    (json.dumps({**GOOD, "Clarity": None}), "not a score"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "Reading Experience"}), "missing Reading Experience"),
])
def test_rejections(text, match):
    with pytest.raises(ParseError, match=match):
        lbw(text)


def test_longen_parsing():
    text = "```json\n{" + ", ".join(f'"{k.title()}": "{i + 3}/10"' for i, k in enumerate(LONGEN_CRITERIA)) + "}\n```"
    assert parse_scores(text, "longen") == {k: i + 3 for i, k in enumerate(LONGEN_CRITERIA)}
    with pytest.raises(ParseError, match="outside 1–10"):
        parse_scores(json.dumps(dict.fromkeys(LONGEN_CRITERIA, 11)), "longen")
    # a 1–5 rubric reply does not satisfy the LonGen judge
    with pytest.raises(ParseError, match="missing"):
        parse_scores(json.dumps(GOOD), "longen")


# --------------------------------------------------------------------------- the retry loop


class ScriptedBackend:
    """Answers request id -> the next scripted reply for that id; records every call."""

    def __init__(self, script: dict[str, list[str]]):
        self.script = {k: list(v) for k, v in script.items()}
        self.calls = []

    def generate(self, requests, sampling=None, seed=0, desc="generate"):
        self.calls.append({"ids": [r.id for r in requests], "seeds": [r.seed for r in requests], "desc": desc,
                           "sampling": sampling, "prompts": [r.messages[-1]["content"] for r in requests]})
        return [Completion(self.script[r.id].pop(0), 10, "stop", 0, r.id) for r in requests]


ITEMS = [{"id": "a", "query": "Write A.", "text": "Answer A."},
         {"id": "b", "query": "Write B.", "text": "Answer B."},
         {"id": "c", "prompt": "Write C.", "text": ""}]


def test_retries_only_what_did_not_parse():
    backend = ScriptedBackend({"a": [json.dumps(GOOD)], "b": ["I refuse.", json.dumps({**GOOD, "Clarity": 9}),
                                                               json.dumps(GOOD)], "c": [json.dumps(GOOD)]})
    result = judge(backend, ITEMS, "longbench_write")
    assert [c["ids"] for c in backend.calls] == [["a", "b", "c"], ["b"], ["b"]]
    assert backend.calls[0]["desc"] == "judge longbench_write" and "try 2" in backend.calls[1]["desc"]
    assert backend.calls[0]["sampling"] is JUDGE_SAMPLING
    seeds_b = [backend.calls[0]["seeds"][1], backend.calls[1]["seeds"][0], backend.calls[2]["seeds"][0]]
    assert len(set(seeds_b)) == 3
    assert "Write C." in backend.calls[0]["prompts"][2]
    assert result.parse_rate == 1.0 and result.failed == []
    assert [r["tries"] for r in result.rows] == [1, 3, 1]
    assert result.scores["b"] == GOOD
    assert lbw_quality(result.scores.values())["Coherence"] == 100.0


def test_items_that_never_parse_are_reported():
    backend = ScriptedBackend({"a": [json.dumps(GOOD)], "b": ["nope"] * 5, "c": ["{}"] * 5})
    result = judge(backend, ITEMS, "longbench_write", retries=5)
    assert len(backend.calls) == 5
    assert result.parse_rate == pytest.approx(1 / 3)
    assert [r["id"] for r in result.failed] == ["b", "c"]
    assert result.failed[0]["tries"] == 5 and result.failed[0]["text"] == "nope"
    assert "no JSON" in result.failed[0]["error"] and "missing" in result.failed[1]["error"]
    assert list(result.scores) == ["a"]
    assert [r["id"] for r in result.rows] == ["a", "b", "c"]


def test_same_seeds_for_the_same_call():
    script = {"a": ["x", json.dumps(GOOD)], "b": [json.dumps(GOOD)], "c": [json.dumps(GOOD)]}
    one, two = ScriptedBackend(script), ScriptedBackend(script)
    judge(one, ITEMS, "longbench_write", seed=3)
    judge(two, ITEMS, "longbench_write", seed=3)
    assert [c["seeds"] for c in one.calls] == [c["seeds"] for c in two.calls]


def test_longen_judge_and_one_try():
    reply = json.dumps(dict.fromkeys(LONGEN_CRITERIA, 7))
    backend = ScriptedBackend({"a": [reply], "b": ["bad"], "c": [reply]})
    result = judge(backend, ITEMS, "longen", retries=1)
    assert len(backend.calls) == 1
    assert result.scores["a"] == dict.fromkeys(LONGEN_CRITERIA, 7)
    assert [r["id"] for r in result.failed] == ["b"]


def test_judge_input_errors():
    backend = ScriptedBackend({})
    with pytest.raises(ValueError, match="duplicate"):
        judge(backend, [ITEMS[0], ITEMS[0]], "longbench_write")
    with pytest.raises(ValueError, match="missing text"):
        judge(backend, [{"id": "a", "query": "q"}], "longbench_write")
    with pytest.raises(ValueError, match="retries"):
        judge(backend, ITEMS, "longbench_write", retries=0)
    with pytest.raises(ValueError, match="unknown judge kind"):
        judge(backend, ITEMS, "other")
    assert backend.calls == []
    assert judge(backend, [], "longen").parse_rate == 0.0


def test_short_backend_reply_is_an_error():
    class Short(ScriptedBackend):
        def generate(self, requests, sampling=None, seed=0, desc="generate"):
            return super().generate(requests[:1], sampling, seed, desc)

    with pytest.raises(RuntimeError, match="1 completions for 3 requests"):
        judge(Short({"a": [json.dumps(GOOD)]}), ITEMS, "longbench_write")


def test_dimension_names_match_scoring():
    assert KINDS["longbench_write"].keys == LBW_DIMENSIONS
    assert KINDS["longen"].keys == LONGEN_CRITERIA


class ChoiceBackend:
    """choice_logprobs from a table: (item id, key) -> the value given probability 0.6 (others 0.1)."""

    def __init__(self, favour: dict):
        self.favour, self.calls = favour, []

    def choice_logprobs(self, requests, options, desc=""):
        self.calls.append((requests, options, desc))
        best = [self.favour.get(tuple(r.id.split("|")), "3") for r in requests]
        return [{v: math.log(0.6 if v == b else 0.1) for v in options} for b in best]


def test_forced_choice_scores_every_item_from_the_value_probabilities():
    backend = ChoiceBackend({("a", "Clarity"): "5", ("b", "Accuracy"): "1"})
    result = judge_choice(backend, ITEMS, "longbench_write")
    (reqs, options, desc), = backend.calls
    assert len(reqs) == 3 * 6 and sorted(options) == ["1", "2", "3", "4", "5"] and "forced choice" in desc
    assert reqs[0].prefill == '{"Relevance": ' and reqs[5].prefill == '{"Reading Experience": '
    assert "Write A." in reqs[0].messages[0]["content"] and "Write C." in reqs[12].messages[0]["content"]
    assert result.parse_rate == 1.0 and result.failed == []
    assert result.scores["a"]["Clarity"] == 5 and result.scores["b"]["Accuracy"] == 1
    assert set(result.scores["c"].values()) == {3}
    assert result.rows[0]["probabilities"]["Clarity"]["5"] == pytest.approx(0.6)
    assert lbw_quality(result.scores.values())["Relevance"] == 50.0


def test_forced_choice_refuses_backends_without_logprobs_and_items_without_text():
    with pytest.raises(ValueError, match="choice_logprobs"):
        judge_choice(ScriptedBackend({}), ITEMS, "longbench_write")
    with pytest.raises(ValueError, match="missing text"):
        judge_choice(ChoiceBackend({}), [{"id": "x", "query": "q"}], "longbench_write")


class DigitBackend(ChoiceBackend):
    """A real digit-splitting tokenizer and scripted next-token distributions for LonGen's 1-10."""

    def __init__(self, tokenizer, first: dict, after_one: dict):
        super().__init__({})
        self.tokenizer, self.first, self.after_one = tokenizer, first, after_one

    def next_token_logprobs(self, requests, positions=1, desc=""):
        self.calls.append((requests, positions, desc))
        table = torch.full((2, len(self.tokenizer)), 1e-12)
        for row, probs in enumerate((self.first, self.after_one)):
            for digit, p in probs.items():
                table[row, self.tokenizer(digit, add_special_tokens=False)["input_ids"][0]] = p
        return [table.log() for _ in requests]


def test_forced_choice_of_ten_reads_the_digit_after_a_prefilled_one(tokenizer):
    # P(first digit) = 0.5 for "1", 0.3 for "7"; after "1": "0" with 0.8, so P(10) = 0.4, P(1) = 0.5 x 0.2
    backend = DigitBackend(tokenizer, {"1": 0.5, "7": 0.3}, {"0": 0.8})
    result = judge_choice(backend, ITEMS[:1], "longen")
    (reqs, positions, desc), = backend.calls
    assert positions == 2 and len(reqs) == 7 and reqs[0].prefill == '{"relevance": 1' and "forced choice" in desc
    probs = result.rows[0]["probabilities"]["relevance"]
    assert probs["10"] == pytest.approx(0.4) and probs["1"] == pytest.approx(0.1) and probs["7"] == pytest.approx(0.3)
    assert set(result.scores["a"].values()) == {10} and result.parse_rate == 1.0
    # after "1", "0" 0.1 and "2" 0.1 (an invalid 12): P(1) = 0.5 x 0.8 = 0.4 beats "7" and "10"
    result = judge_choice(DigitBackend(tokenizer, {"1": 0.5, "7": 0.3}, {"0": 0.1, "2": 0.1}), ITEMS[:1], "longen")
    probs = result.rows[0]["probabilities"]["coherence"]
    assert probs["1"] == pytest.approx(0.4) and probs["10"] == pytest.approx(0.05)
    assert set(result.scores["a"].values()) == {1}


def test_forced_choice_of_ten_refuses_tokenizers_it_cannot_read():
    class Tok:
        """Spells "10" as one unknown token that is not "1" then "0"."""

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [100 + int(text)] if text.isdigit() and int(text) < 10 else [999, 998]}

    backend = DigitBackend.__new__(DigitBackend)
    ChoiceBackend.__init__(backend, {})
    backend.tokenizer = Tok()
    with pytest.raises(ValueError, match='"10" as "1" then "0"'):
        judge_choice(backend, ITEMS[:1], "longen")


def test_forced_choice_on_a_real_model(tiny):
    result = judge_choice(HFBackend(tiny, batch_size=4, progress=False), ITEMS[:2], "longbench_write")
    assert result.parse_rate == 1.0
    for row in result.rows:
        for key, probs in row["probabilities"].items():
            assert 0 < sum(probs.values()) <= 1.0001
            assert row["scores"][key] == int(max(probs, key=probs.get))


def test_forced_choice_of_ten_on_a_real_model_matches_a_direct_forward_pass(tiny):
    backend = HFBackend(tiny, batch_size=3, progress=False)
    result = judge_choice(backend, ITEMS[:2], "longen")
    assert result.parse_rate == 1.0
    for row in result.rows:
        assert set(row["scores"]) == set(LONGEN_CRITERIA)
        for key, probs in row["probabilities"].items():
            assert set(probs) == {str(v) for v in range(1, 11)} and 0 < sum(probs.values()) <= 1.0001
            assert row["scores"][key] == int(max(probs, key=probs.get))
    # P(10) = P("1" | pre-fill) x P("0" | pre-fill + "1"), from two plain forward passes
    tok = tiny.tokenizer
    message = {"role": "user", "content": judge_prompt("longen", "Write A.", "Answer A.")}
    prompt = render_prompt(tok, ChatRequest([message], prefill='{"clarity": '))
    one, zero = (tok(d, add_special_tokens=False)["input_ids"][0] for d in "10")
    with torch.no_grad():
        before = tiny.model(**tok(prompt, add_special_tokens=False, return_tensors="pt")).logits[0, -1].softmax(-1)
        after = tiny.model(**tok(prompt + "1", add_special_tokens=False, return_tensors="pt")).logits[0, -1].softmax(-1)
    assert result.rows[0]["probabilities"]["clarity"]["10"] == pytest.approx(float(before[one] * after[zero]), rel=1e-3)
