"""LLM-as-judge for output quality: the prompts, a tolerant score parser, and a retrying judge loop.

Two rubrics: LongBench-Write (six dimensions, integers 1–5) and LonGen (seven criteria, 1–10).
The judge is told to ignore length, which the length scores measure on their own. Items whose
reply never parses are returned as failures, not dropped.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

import torch

from .chat import ChatRequest, Sampling, derive_seed, render_prompt
from .scoring import LBW_DIMENSIONS, LONGEN_CRITERIA

__all__ = [
    "KINDS",
    "JUDGE_SAMPLING",
    "JudgeResult",
    "ParseError",
    "Rubric",
    "judge",
    "judge_choice",
    "judge_prompt",
    "parse_scores",
]


@dataclass(frozen=True)
class Rubric:
    """The keys a judge must score and their range."""

    keys: tuple[str, ...]
    low: int
    high: int


KINDS = {
    "longbench_write": Rubric(LBW_DIMENSIONS, 1, 5),
    "longen": Rubric(LONGEN_CRITERIA, 1, 10),
}

# LongWriter's evaluation sampling (METHOD 2.2), for the answers it scores; the token cap is the caller's.
EVAL_SAMPLING = Sampling(temperature=0.5, top_p=0.8, top_k=50, repetition_penalty=1.0)
# The judge samples alike. No stop strings: the analysis may contain "---" or blank lines before the JSON.
JUDGE_SAMPLING = EVAL_SAMPLING.with_(max_new_tokens=1024, stop=())

_LBW_PROMPT = """You are a strict expert reviewer of long-form writing. Rate the response below to the \
user's writing request on six dimensions, each an integer from 1 (very poor) to 5 (excellent):

- Relevance: does it do what the request asks, on topic and in the requested form?
- Accuracy: are its facts, reasoning and details correct, without invented claims?
- Coherence: is it well organised, with ideas that follow logically from one another?
- Clarity: is the language clear, precise and easy to follow?
- Breadth and Depth: does it cover the subject fully and go beyond the obvious?
- Reading Experience: is it engaging and pleasant to read, free of padding and repetition?

Be demanding: give 5 only to work with no real weakness on that dimension. Do not consider the \
length of the response: whether it is short or long, judge only what it says and how well.

[Request]
{query}

[Response]
{answer}

First write a brief analysis (a few sentences). Then give the scores as one JSON object and \
nothing after it, exactly with these keys:
{{"Relevance": <1-5>, "Accuracy": <1-5>, "Coherence": <1-5>, "Clarity": <1-5>, \
"Breadth and Depth": <1-5>, "Reading Experience": <1-5>}}"""

_LONGEN_PROMPT = """You are an impartial, careful judge of long-form writing. Rate the response \
below to the user's request on seven criteria, each an integer from 1 (very poor) to 10 (outstanding):

- relevance: it addresses the request and stays on topic
- coherence: its parts connect and the whole reads as one logical piece
- accuracy: what it states is correct and well-founded
- consistency: it does not contradict itself in facts, tone or style
- clarity: the language is clear and easy to understand
- creativity: it brings original ideas, angles or expression
- engagement: it holds the reader's interest to the end

Ignore the length of the response entirely; the request may name a length, but that is scored \
separately. Judge only quality.

[Request]
{query}

[Response]
{answer}

Reply with one JSON object and nothing else, exactly with these keys:
{{"relevance": <1-10>, "coherence": <1-10>, "accuracy": <1-10>, "consistency": <1-10>, \
"clarity": <1-10>, "creativity": <1-10>, "engagement": <1-10>}}"""

_PROMPTS = {"longbench_write": _LBW_PROMPT, "longen": _LONGEN_PROMPT}


def _rubric(kind: str) -> Rubric:
    if kind not in KINDS:
        raise ValueError(f"unknown judge kind {kind!r}; valid: {', '.join(KINDS)}")
    return KINDS[kind]


def judge_prompt(kind: str, query: str, answer: str) -> str:
    """The judge's user message for one (request, response) pair."""
    _rubric(kind)
    return _PROMPTS[kind].format(query=query.strip(), answer=answer.strip() or "(empty response)")


# --------------------------------------------------------------------------- parsing


class ParseError(ValueError):
    """A judge reply from which the scores could not be read."""


def _norm_key(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower().replace("&", "and"))


def _candidates(text: str) -> list[str]:
    """Possible JSON objects in a reply, the most likely (the last ones) first."""
    found = [m.group(1) for m in re.finditer(r"```[a-zA-Z]*\s*(.*?)```", text, re.S)]
    depth, start = 0, None
    for i, ch in enumerate(text):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                found.append(text[start : i + 1])
    if depth and start is not None:
        found.append(text[start:] + "}" * depth)  # a reply cut off inside the object
    return found[::-1]


_PAIR = re.compile(r"""(?P<key>"[^"\n]+"|'[^'\n]+'|[A-Za-z][A-Za-z _&-]*?)\s*[:：]\s*"""
                   r"""(?P<value>"[^"\n]*"|'[^'\n]*'|[^,}\n]+)""")


def _load(candidate: str) -> dict:
    """A dict from a JSON-ish object: strict JSON, then repaired JSON, then key: value pairs."""
    text = candidate.translate(str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'"})).strip()
    attempts = [text]
    repaired = re.sub(r"'([^'\n]*)'", r'"\1"', text)
    repaired = re.sub(r'([{,]\s*)([A-Za-z_][A-Za-z0-9 _&-]*?)\s*:', r'\1"\2":', repaired)
    repaired = re.sub(r",\s*([}\]])", r"\1", repaired)
    attempts.append(repaired)
    for attempt in attempts:
        try:
            obj = json.loads(attempt)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    pairs = {}
    for m in _PAIR.finditer(text):
        pairs.setdefault(m.group("key").strip("\"' "), m.group("value").strip())
    return pairs


def _flatten(obj: dict) -> dict:
    """Normalised key -> value, looking into {"scores": {...}} and {"Relevance": {"score": 4}}."""
    out: dict = {}
    nested = []
    for key, value in obj.items():
        if isinstance(value, dict):
            inner = {_norm_key(str(k)): v for k, v in value.items()}
            score = next((inner[n] for n in ("score", "rating", "value") if n in inner), None)
            if score is not None:
                out.setdefault(_norm_key(str(key)), score)
            else:
                nested.append(value)
        elif not isinstance(value, list):
            out.setdefault(_norm_key(str(key)), value)
    for value in nested:
        for key, inner in _flatten(value).items():
            out.setdefault(key, inner)
    return out


def _score(value, rubric: Rubric) -> int:
    if isinstance(value, bool):
        raise ParseError(f"a score cannot be {value!r}")
    if isinstance(value, str):
        m = re.fullmatch(r"""\s*["']?\s*(\d+(?:\.\d+)?)\s*(?:/\s*(\d+))?\s*(?:分|points?)?\s*["']?\s*""", value)
        if not m:
            raise ParseError(f"not a score: {value!r}")
        if m.group(2) is not None and int(m.group(2)) != rubric.high:
            raise ParseError(f"{value!r} is on another scale than {rubric.low}–{rubric.high}")
        value = float(m.group(1))
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParseError(f"not a score: {value!r}")
    if value != int(value):
        raise ParseError(f"{value} is not an integer score")
    if not rubric.low <= value <= rubric.high:
        raise ParseError(f"{value:g} is outside {rubric.low}–{rubric.high}")
    return int(value)


def parse_scores(text: str, kind: str) -> dict[str, int]:
    """The rubric's scores from a judge reply, under their canonical names; raises ParseError.

    Tolerates code fences, text around the JSON, single quotes, trailing commas, unquoted keys,
    keys in other case or spacing ("breadth_and_depth"), and values such as "4" or "4/5".
    Scores outside the rubric's range, non-integers and missing keys are rejected.
    """
    rubric = _rubric(kind)
    candidates = _candidates(text)
    if not candidates:
        raise ParseError("no JSON object in the reply")
    first_error = None
    for candidate in candidates:
        values = _flatten(_load(candidate))
        try:
            missing = [k for k in rubric.keys if _norm_key(k) not in values]
            if missing:
                raise ParseError(f"missing {', '.join(missing)}")
            return {k: _score(values[_norm_key(k)], rubric) for k in rubric.keys}
        except ParseError as exc:
            first_error = first_error or exc
    raise first_error


# --------------------------------------------------------------------------- the judge loop


@dataclass
class JudgeResult:
    """One row per item, in input order: id, scores (None if never parsed), tries, last reply, error."""

    kind: str
    rows: list[dict] = field(default_factory=list)

    @property
    def scores(self) -> dict[str, dict[str, int]]:
        """Item id -> scores, for the items that parsed."""
        return {r["id"]: r["scores"] for r in self.rows if r["scores"] is not None}

    @property
    def failed(self) -> list[dict]:
        """The rows that never parsed, with their last reply and the reason."""
        return [r for r in self.rows if r["scores"] is None]

    @property
    def parse_rate(self) -> float:
        return len(self.scores) / len(self.rows) if self.rows else 0.0


def judge(backend, items: list[dict], kind: str, sampling: Sampling | None = None, retries: int = 5,
          seed: int = 0) -> JudgeResult:
    """Score every item (dicts with ``id``, ``query`` and the response ``text``) with ``backend``.

    Each round sends only the items not parsed yet, with a fresh seed per item and try; an item
    gets at most ``retries`` tries. Items that never parse stay in the result as failures.
    """
    _rubric(kind)
    if retries < 1:
        raise ValueError(f"retries must be at least 1, got {retries}")
    sampling = sampling or JUDGE_SAMPLING
    prompts = _prompts(items, kind)
    rows = [{"id": i, "scores": None, "tries": 0, "text": None, "error": None} for i in prompts]
    for attempt in range(retries):
        pending = [r for r in rows if r["scores"] is None]
        if not pending:
            break
        requests = [ChatRequest([{"role": "user", "content": prompts[r["id"]]}], id=str(r["id"]),
                                seed=derive_seed(seed, "judge", kind, r["id"], attempt)) for r in pending]
        desc = f"judge {kind}" + (f" (try {attempt + 1})" if attempt else "")
        outs = backend.generate(requests, sampling, desc=desc)
        if len(outs) != len(requests):
            raise RuntimeError(f"the backend returned {len(outs)} completions for {len(requests)} requests")
        for row, out in zip(pending, outs):
            row["tries"] += 1
            row["text"] = out.text
            try:
                row["scores"], row["error"] = parse_scores(out.text, kind), None
            except ParseError as exc:
                row["error"] = str(exc)
    return JudgeResult(kind, rows)


def judge_choice(backend, items: list[dict], kind: str) -> JudgeResult:
    """Forced-choice scores, for a judge too weak to write the JSON: every item is scored.

    For each item and rubric key, the judge's reply is pre-filled with ``{"<key>": `` and the score
    is the most probable of the rubric's values as the next tokens (no sampling). With one token per
    value that is one forward pass (the backend's ``choice_logprobs``). LonGen's "10" is two tokens
    for tokenizers that split digits: the reply is pre-filled up to a "1" and one pass reads both the
    first digit and what follows the "1" (``next_token_logprobs``): P(10) = P("1") P("0" | "1"), and
    P(1) = P("1") P(no further digit | "1"). Rows carry each key's probabilities over the values,
    which sum to at most 1.
    """
    rubric = _rubric(kind)
    if not hasattr(backend, "choice_logprobs"):
        raise ValueError(f"{type(backend).__name__} has no choice_logprobs: forced-choice judging needs an "
                         "in-process backend (HFBackend); use the sampled judge with a served model.")
    values = [str(v) for v in range(rubric.low, rubric.high + 1)]
    prompts = _prompts(items, kind)
    keyed = [(i, key) for i in prompts for key in rubric.keys]
    desc = f"judge {kind} (forced choice)"
    if rubric.high <= 9 or _single_tokens(backend, values):
        requests = _prefilled(prompts, keyed)
        probs = [{v: math.exp(lp) for v, lp in scores.items()}
                 for scores in backend.choice_logprobs(requests, {v: [v] for v in values}, desc=desc)]
    else:
        probs = _two_digit_probs(backend, prompts, keyed, values, desc)
    it = iter(probs)
    rows = []
    for i in prompts:
        p_key = {key: next(it) for key in rubric.keys}
        scores = {key: int(max(p, key=p.get)) for key, p in p_key.items()}
        rows.append({"id": i, "scores": scores, "tries": 1, "text": None, "error": None,
                     "probabilities": {k: {v: float(f"{x:.4g}") for v, x in p.items()} for k, p in p_key.items()}})
    return JudgeResult(kind, rows)


def _prefilled(prompts: dict, keyed: list, value: str = "") -> list[ChatRequest]:
    """One request per (item, key): the judge prompt, with the reply pre-filled as `{"<key>": <value>`."""
    return [ChatRequest([{"role": "user", "content": prompts[i]}], prefill=f'{{"{key}": {value}', id=f"{i}|{key}")
            for i, key in keyed]


def _ids(backend, word: str) -> list[int]:
    return backend.tokenizer(word, add_special_tokens=False)["input_ids"]


def _single_tokens(backend, values: list[str]) -> bool:
    """Whether each value is one token of its own (e.g. "10" in tokenizers with multi-digit tokens)."""
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is None:
        return True  # nothing to check against; choice_logprobs refuses values that share a first token
    ids = [_ids(backend, v) for v in values]
    return all(len(i) == 1 for i in ids) and len({i[0] for i in ids}) == len(ids)


def _two_digit_probs(backend, prompts: dict, keyed: list, values: list[str], desc: str) -> list[dict]:
    """Value probabilities for a 1-10 rubric under a tokenizer that spells "10" as "1" then "0"."""
    digits = [str(d) for d in range(10)]
    ids = {d: _ids(backend, d) for d in digits}
    if (not hasattr(backend, "next_token_logprobs") or any(len(i) != 1 for i in ids.values())
            or _ids(backend, "10") != ids["1"] + ids["0"] or values != [str(v) for v in range(1, 11)]):
        raise ValueError("forced choice of a 1-10 score needs a backend with next_token_logprobs and a tokenizer "
                         'that spells the values as single digits and "10" as "1" then "0", or one token per value; '
                         "use the sampled judge (judge()) otherwise.")
    digit = torch.tensor([ids[d][0] for d in digits])
    requests = _prefilled(prompts, keyed, "1")
    if requests:  # the pre-filled "1" must stay a token of its own after the prompt's last one
        with_one = _ids(backend, render_prompt(backend.tokenizer, requests[0]))
        without = _ids(backend, render_prompt(backend.tokenizer, ChatRequest(requests[0].messages,
                                                                  prefill=requests[0].prefill[:-1])))
        if with_one != without + ids["1"]:
            raise ValueError('forced choice of a 1-10 score: this tokenizer merges the "1" with what precedes it '
                             "after the pre-fill; use the sampled judge (judge()).")
    out = []
    for logp in backend.next_token_logprobs(requests, 2, desc=desc):
        first, after_one = logp[-2, digit].exp(), logp[-1, digit].exp()
        p = {d: float(first[int(d)]) for d in values[1:9]}  # "2".."9"
        p["1"] = float(first[1] * (1 - after_one.sum()).clamp(min=0))
        p["10"] = float(first[1] * after_one[0])
        out.append({v: p[v] for v in values})
    return out


def _prompts(items: list[dict], kind: str) -> dict:
    """Item id -> the judge's user message; checks each item has an id, a query and a text."""
    prompts = {}
    for item in items:
        missing = [k for k in ("id", "text") if k not in item] + ([] if "query" in item or "prompt" in item
                                                                   else ["query"])
        if missing:
            raise ValueError(f"a judged item needs id, query and text; missing {', '.join(missing)} in {item!r:.200}")
        if item["id"] in prompts:
            raise ValueError(f"duplicate item id {item['id']!r}")
        prompts[item["id"]] = judge_prompt(kind, item.get("query", item.get("prompt")), item["text"] or "")
    return prompts
