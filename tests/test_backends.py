"""The Hugging Face backend on a tiny random model: batching, refill, sampling, stops, errors."""

import dataclasses

import pytest
import torch

from sltk.backends import HFBackend, RepetitionGuard, _prefill_groups
from sltk.chat import FINISH_REASONS, ChatRequest, PromptError, Sampling, render_prompt
from sltk.models import add_roles, lora_config

QUESTIONS = [
    "Hi",
    "Write a story about a lighthouse keeper who finds a message in a bottle.",
    "Explain photosynthesis.",
    "List three uses of copper and say why each works, in detail, with examples from industry.",
    "Why is the sky blue?",
    "Plan a week of meals.",
    "Describe the water cycle for a ten-year-old, step by step.",
]


def requests(role=None, prefill="", caps=None):
    caps = caps or [None] * len(QUESTIONS)
    return [ChatRequest([{"role": "user", "content": q}], prefill=prefill, role=role, id=f"q{i}", max_new_tokens=c)
            for i, (q, c) in enumerate(zip(QUESTIONS, caps))]


GREEDY = Sampling(temperature=0, max_new_tokens=24, stop=(), loop_tokens=0)


def test_results_keep_request_order_and_report_counts(tiny):
    backend = HFBackend(tiny, batch_size=3, progress=False)
    out = backend.generate(requests(), Sampling(max_new_tokens=16), seed=0)
    assert [c.id for c in out] == [f"q{i}" for i in range(len(QUESTIONS))]
    for c in out:
        assert 0 < c.tokens <= 16
        assert c.finish_reason in FINISH_REASONS
        assert c.prompt_tokens > 5
    assert backend.last_stats["tokens"] == sum(c.tokens for c in out)


def test_each_result_is_handed_over_as_it_finishes(tiny):
    """`on_result` sees every request once, shortest first, before the call returns all of them."""
    caps = [30, 7, 19, 3, 24, 11, 16]
    seen = []
    out = HFBackend(tiny, batch_size=7, progress=False).generate(
        requests(caps=caps), GREEDY, on_result=lambda i, c: seen.append((i, c)))
    assert [i for i, _ in seen] == sorted(range(len(caps)), key=caps.__getitem__)
    assert all(out[i] is c for i, c in seen)


@pytest.mark.parametrize("batch_size", [2, 3, 7])
def test_refilled_batches_match_one_at_a_time(tiny, batch_size):
    """Greedy decoding must not depend on which requests share the batch or when they joined."""
    caps = [30, 7, 19, 3, 24, 11, 16]  # rows leave at different steps, so new ones join mid-flight
    sequential = HFBackend(tiny, batch_size=1, progress=False).generate(requests(caps=caps), GREEDY)
    batched = HFBackend(tiny, batch_size=batch_size, progress=False).generate(requests(caps=caps), GREEDY)
    assert [c.tokens for c in sequential] == caps
    assert [c.text for c in batched] == [c.text for c in sequential]
    assert [c.tokens for c in batched] == [c.tokens for c in sequential]


def test_prefill_in_groups_matches_one_padded_prefill(tiny):
    """Prompts prefilled a few at a time (a small token budget) decode exactly as in one padded batch."""
    caps = [30, 7, 19, 3, 24, 11, 16]
    whole = HFBackend(tiny, batch_size=7, progress=False).generate(requests(caps=caps), GREEDY)
    grouped = HFBackend(tiny, batch_size=7, progress=False, prefill_tokens=40)
    lengths = [len(grouped.tokenizer(render_prompt(grouped.tokenizer, r))["input_ids"]) for r in requests()]
    assert len(_prefill_groups(lengths, 40)) > 2  # the budget does split the batch
    out = grouped.generate(requests(caps=caps), GREEDY)
    assert [c.text for c in out] == [c.text for c in whole]


def test_prefill_groups_keep_order_and_budget():
    lengths = [2000, 1500, 900, 60, 60, 50, 40]
    groups = _prefill_groups(lengths, 2048)
    assert [i for g in groups for i in g] == list(range(len(lengths)))
    assert groups[:2] == [[0], [1]]  # a prompt over half the budget goes alone
    assert all(len(g) * max(lengths[i] for i in g) <= 2048 for g in groups if len(g) > 1)
    assert _prefill_groups([60] * 40, 2048) == [list(range(34)), list(range(34, 40))]


def test_sampled_output_does_not_depend_on_batch_mates(tiny):
    """Each request samples from its own random stream, so batching and refills change nothing."""
    caps = [30, 7, 19, 3, 24, 11, 16]
    sampling = Sampling(max_new_tokens=30, temperature=1.0, top_k=50, top_p=0.95, loop_tokens=0, stop=())
    one = HFBackend(tiny, batch_size=1, progress=False).generate(requests(caps=caps), sampling, seed=4)
    many = HFBackend(tiny, batch_size=3, progress=False).generate(requests(caps=caps), sampling, seed=4)
    assert [c.text for c in many] == [c.text for c in one]
    own = [ChatRequest(r.messages, seed=99, max_new_tokens=12) for r in requests()[:2]]
    a = HFBackend(tiny, progress=False).generate(own, sampling, seed=1)
    b = HFBackend(tiny, progress=False).generate(own[::-1], sampling, seed=2)
    assert [c.text for c in a] == [c.text for c in b[::-1]]


def test_same_seed_same_output_other_seed_differs(tiny):
    backend = HFBackend(tiny, batch_size=4, progress=False)
    sampling = Sampling(max_new_tokens=20, temperature=1.0, top_p=0.95, top_k=50)
    a = backend.generate(requests(), sampling, seed=1)
    b = backend.generate(requests(), sampling, seed=1)
    c = backend.generate(requests(), sampling, seed=2)
    assert [x.text for x in a] == [x.text for x in b]
    assert [x.text for x in a] != [x.text for x in c]


def test_token_cap_gives_length_finish(tiny):
    out = HFBackend(tiny, batch_size=4, progress=False).generate(requests(), GREEDY.with_(max_new_tokens=5))
    assert all(c.tokens <= 5 for c in out)
    assert any(c.finish_reason == "length" and c.tokens == 5 for c in out)


def test_top_k_one_equals_greedy(tiny):
    backend = HFBackend(tiny, batch_size=4, progress=False)
    greedy = backend.generate(requests(), GREEDY)
    top1 = backend.generate(requests(), GREEDY.with_(temperature=0.7, top_k=1), seed=5)
    assert [c.text for c in top1] == [c.text for c in greedy]


def test_prefill_is_appended_after_the_assistant_header(tokenizer):
    req = ChatRequest([{"role": "user", "content": "Tell a story."}], prefill="Once upon a time")
    prompt = render_prompt(tokenizer, req)
    assert prompt.endswith("<|im_start|>assistant\nOnce upon a time")


def test_prefill_changes_what_is_generated(tiny):
    backend = HFBackend(tiny, batch_size=4, progress=False)
    plain = backend.generate(requests(), GREEDY)
    filled = backend.generate(requests(prefill="The answer, in short:"), GREEDY)
    assert [c.text for c in plain] != [c.text for c in filled]
    assert all(c.prompt_tokens > p.prompt_tokens for c, p in zip(filled, plain))


def test_stop_strings_cut_the_text(tiny, tokenizer):
    backend = HFBackend(tiny, progress=False)
    tokens = tokenizer("First part.\n\n\nSecond part --- third", add_special_tokens=False)["input_ids"]
    assert backend._text(tokens, ("---", "\n\n\n")) == "First part."
    assert backend._text(tokens, ("---",)) == "First part.\n\n\nSecond part "
    assert backend._text(tokens, ()) == "First part.\n\n\nSecond part --- third"
    assert backend._hit_stop(tokens, ("---",))
    assert not backend._hit_stop(tokens, ("###",))


def test_min_new_tokens_holds_off_the_end_token_and_stop_strings(tiny, tokenizer):
    with torch.no_grad():  # make the end token the model's first choice everywhere
        tiny.model.lm_head.weight[tokenizer.eos_token_id] *= 0
        tiny.model.lm_head.weight[tokenizer.eos_token_id] += tiny.model.model.norm.weight * 50
    backend = HFBackend(tiny, batch_size=3, progress=False)
    reqs = requests()[:3]
    assert [c.tokens for c in backend.generate(reqs, GREEDY)] == [0, 0, 0]
    for r, floor in zip(reqs, (5, 9, 0)):
        r.min_new_tokens = floor
    out = backend.generate(reqs, GREEDY)
    assert [c.tokens for c in out] == [5, 9, 0]  # it ends as soon as it may
    assert [c.finish_reason for c in out] == ["stop"] * 3
    tokens = tokenizer("First part.\n\n\nSecond part --- third", add_special_tokens=False)["input_ids"]
    floor = len(tokenizer("First part.\n\n\nSecond", add_special_tokens=False)["input_ids"])
    assert backend._text(tokens, ("---", "\n\n\n"), min_new=floor) == "First part.\n\n\nSecond part "
    assert backend._text(tokens, ("---", "\n\n\n"), min_new=len(tokens)) == "First part.\n\n\nSecond part --- third"


def test_roles_per_request_use_their_adapter(tokenizer):
    from conftest import tiny_model

    loaded = add_roles(tiny_model(tokenizer), lora_config(r=4, alpha=64, init_lora_weights=False))
    backend = HFBackend(loaded, batch_size=6, progress=False)
    mixed = requests(role="generator")[:3] + requests(role="extender")[:3] + requests()[:3]
    out = backend.generate(mixed, GREEDY)
    gen, ext, base = out[:3], out[3:6], out[6:]
    assert [c.text for c in gen] != [c.text for c in ext]
    assert [c.text for c in gen] != [c.text for c in base]
    mixed_steps = backend.last_stats["decode_steps"]
    # one shared batch (PEFT applies each row's adapter) gives what each role gives alone
    steps = 0
    for role, got in (("generator", gen), ("extender", ext), (None, base)):
        alone = backend.generate(requests(role=role)[:3], GREEDY)
        assert [c.text for c in alone] == [c.text for c in got]
        steps += backend.last_stats["decode_steps"]
    assert mixed_steps < steps
    loaded.model.train()
    backend.generate(mixed[:4], GREEDY)
    assert loaded.model.training  # the mode it had before the mixed batch


def test_empty_and_malformed_requests_are_refused(tiny):
    backend = HFBackend(tiny, progress=False)
    with pytest.raises(PromptError, match="no messages"):
        backend.generate([ChatRequest([])])
    with pytest.raises(PromptError, match="empty user message"):
        backend.generate([ChatRequest([{"role": "user", "content": "   "}], id="x")])
    with pytest.raises(PromptError, match="'role' and 'content'"):
        backend.generate([ChatRequest([{"text": "hi"}])])


def test_over_long_prompt_is_refused_before_any_work(tiny):
    backend = HFBackend(tiny, progress=False)  # the tiny model's context is 512 tokens
    long = ChatRequest([{"role": "user", "content": "word " * 600}], id="long")
    with pytest.raises(PromptError, match="long.*context of 512"):
        backend.generate(requests() + [long])


def test_generation_is_capped_by_the_context(tiny):
    near = ChatRequest([{"role": "user", "content": "word " * 480}])
    out = HFBackend(tiny, progress=False).generate([near], GREEDY.with_(max_new_tokens=400))
    assert out[0].prompt_tokens + out[0].tokens <= 512
    assert out[0].finish_reason == "length"


def test_repetition_guard_fires_on_loops_only():
    loop = RepetitionGuard(n=4, limit=8)
    seq = []
    fired_at = None
    for i in range(60):
        seq.append([1, 2, 3, 4, 5][i % 5])
        if loop.add(seq):
            fired_at = len(seq)
            break
    # the first repeated 4-gram ends at token 9 (period 5); eight repeats later it fires
    assert fired_at == 9 + 7
    fresh = RepetitionGuard(n=4, limit=8)
    assert not any(fresh.add(list(range(k + 1))) for k in range(200))
    off = RepetitionGuard(n=4, limit=0)
    assert not any(off.add([7] * (k + 1)) for k in range(50))


def test_sampling_is_a_frozen_copyable_value():
    s = Sampling()
    assert (s.temperature, s.top_p, s.top_k, s.repetition_penalty, s.max_new_tokens) == (0.7, 0.8, 20, 1.1, 16384)
    assert s.stop == ("---", "\n---", "\n\n---", "\n\n\n")
    t = s.with_(max_new_tokens=10)
    assert t.max_new_tokens == 10 and s.max_new_tokens == 16384
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.temperature = 1.0  # type: ignore[misc]


def test_no_grad_state_leaks(tiny):
    HFBackend(tiny, progress=False).generate(requests()[:2], GREEDY)
    assert torch.is_grad_enabled()


def test_growing_layer_matches_concatenation():
    from transformers.cache_utils import DynamicLayer

    from sltk.backends import GrowingLayer

    grow, ref = GrowingLayer(), DynamicLayer()
    grow.SPARE = 3  # force several regrowths
    for step in range(12):
        k, v = torch.randn(2, 3, 5 if step == 0 else 1, 4), torch.randn(2, 3, 5 if step == 0 else 1, 4)
        gk, gv = grow.update(k, v)
        rk, rv = ref.update(k, v)
        assert torch.equal(gk, rk) and torch.equal(gv, rv)
    # batch selection as the backend does it: keys first, then values, each from its own length
    grow.keys, grow.values = grow.keys[[1], :, 2:], grow.values[[1], :, 2:]
    assert grow.keys.shape == grow.values.shape == (1, 3, 14, 4)
    assert torch.equal(grow.values, ref.values[[1], :, 2:])
    k, v = torch.randn(1, 3, 1, 4), torch.randn(1, 3, 1, 4)
    gk, gv = grow.update(k, v)
    assert torch.equal(gv[:, :, -1:], v) and gk.shape[-2] == 15


def test_bfloat16_kv_cache_under_a_float32_model(tiny):
    from sltk.backends import GrowingLayer

    layer = GrowingLayer(torch.bfloat16)
    k, _ = layer.update(torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8))
    assert k.dtype == torch.bfloat16
    reqs = requests()[:3]
    full = HFBackend(tiny, batch_size=2, progress=False).generate(reqs, GREEDY.with_(max_new_tokens=12))
    narrow = HFBackend(tiny, batch_size=2, progress=False, kv_dtype="bfloat16")
    half = narrow.generate(reqs, GREEDY.with_(max_new_tokens=12))
    # same lengths and, for this small model, the same greedy tokens; the model keeps its attention afterwards
    assert [c.tokens for c in half] == [c.tokens for c in full]
    assert sum(a.text == b.text for a, b in zip(half, full)) >= 2
    assert tiny.model.config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="not a torch dtype"):
        HFBackend(tiny, kv_dtype="bfloat17")


def test_next_token_logprobs_match_unpadded_forward_passes(tiny):
    backend = HFBackend(tiny, batch_size=3, progress=False)
    reqs = [ChatRequest([{"role": "user", "content": q}], prefill=p)
            for q, p in (("Rate it.", '{"score": 1'), ("A much longer question, padded on the left?", "Yes"))]
    got = backend.next_token_logprobs(reqs, 2)
    assert [g.shape for g in got] == [(2, len(tiny.tokenizer))] * 2
    for req, g in zip(reqs, got):
        ids = tiny.tokenizer(render_prompt(tiny.tokenizer, req), add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            logp = tiny.model(**ids).logits[0, -2:].float().log_softmax(-1)
        assert torch.allclose(g, logp, atol=1e-4)
    with pytest.raises(ValueError, match="fewer than 5000 prompt tokens"):
        backend.next_token_logprobs(reqs[:1], 5000)


def test_choice_logprobs_is_a_forced_choice_from_one_forward_pass(tiny):
    backend = HFBackend(tiny, batch_size=2, progress=False)
    reqs = [ChatRequest([{"role": "user", "content": q}]) for q in ("Is this long?", "Yes or no?", "Answer.")]
    scores = backend.choice_logprobs(reqs, {"yes": ["yes", "Yes"], "no": ["no"]})
    assert len(scores) == 3 and all(s["yes"] < 0 and s["no"] < 0 for s in scores)
    # the same numbers as a direct forward pass over the rendered prompt
    ids = tiny.tokenizer(render_prompt(tiny.tokenizer, reqs[2]), add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        logp = tiny.model(**ids).logits[0, -1].float().log_softmax(-1)
    no_id = tiny.tokenizer("no", add_special_tokens=False)["input_ids"][0]
    assert scores[2]["no"] == pytest.approx(float(logp[no_id]), abs=1e-4)


def test_out_of_memory_halves_the_batch_and_every_request_is_answered(tiny, caplog):
    """An injected out-of-memory error (as a GPU raises it) whenever more than one row decodes."""
    want = [c.text for c in HFBackend(tiny, batch_size=1, progress=False).generate(requests(), GREEDY)]
    forward = tiny.model.forward

    def cramped(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return forward(*args, **kwargs)

    tiny.model.forward = cramped
    backend = HFBackend(tiny, batch_size=8, progress=False)
    got = backend.generate(requests(), GREEDY)
    assert [c.text for c in got] == want and all(c.id == f"q{i}" for i, c in enumerate(got))
    assert backend.batch_size == 1 and backend.last_stats["oom_halvings"] == 2
    assert "halved to 3 and 7 requests go on" in caplog.text and "halved to 1 and 7 requests" in caplog.text
    tiny.model.forward = lambda *a, **k: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("injected"))
    with pytest.raises(torch.cuda.OutOfMemoryError, match="with a batch of 1: lower sampling.max_new_tokens"):
        HFBackend(tiny, batch_size=2, progress=False).generate(requests()[:2], GREEDY)
