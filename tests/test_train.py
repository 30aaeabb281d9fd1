"""Role training: label masks, the token-mean loss, batching, training, resuming and saving."""

import copy
import math

import pytest
import torch
from conftest import tiny_model

from sltk.backends import HFBackend
from sltk.chat import ChatRequest, Sampling
from sltk.models import LoadedModel, add_roles, load_base, load_roles, lora_config
from sltk.train import (
    IGNORE,
    MARKER,
    SkipRecord,
    TrainConfig,
    TrainDataError,
    TrainError,
    checkpoint_dir,
    collate,
    encode_check,
    encode_record,
    encode_records,
    epoch_order,
    eval_loss,
    is_checkpointing,
    make_batches,
    role_parameters,
    sequence_mean_loss,
    token_mean_loss,
    train_role,
)

QA = [
    ("Name a colour.", "Blue."),
    ("Say hello.", "Hello there, friend."),
    ("Count to five.", "One, two, three, four, five."),
    ("Describe the sea.", "The sea is wide and grey, and the waves roll in slowly over the pebbles."),
    ("Give a fruit.", "A ripe pear."),
    ("Tell me about rain.", ("Rain falls from clouds. It wets the streets, fills the rivers and feeds the "
                             "fields where the farmers grow wheat and barley.")),
]
RECORDS = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in QA]
GREEDY = Sampling(temperature=0, max_new_tokens=20, stop=(), loop_tokens=0)


def prompt_ids(tokenizer, messages):
    text = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def learnable_tiny(tokenizer):
    """The tiny model with embeddings large enough that its adapters can move the logits much.

    At the usual 0.02 initialisation the tied output layer caps any logit near 1, so no adapter
    could bring the loss far below log(vocabulary)."""
    loaded = tiny_model(tokenizer)
    with torch.no_grad():
        loaded.model.get_input_embeddings().weight.mul_(25)
    return loaded


def with_roles(tokenizer, dropout=0.0):
    return add_roles(learnable_tiny(tokenizer), lora_config(r=4, alpha=8, dropout=dropout))


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


# -- tokenisation -----------------------------------------------------------------------------

def test_prompt_is_masked_and_answer_with_end_of_turn_is_the_target(tokenizer):
    record = RECORDS[3]
    example = encode_record(tokenizer, record, 1000)
    n = len(prompt_ids(tokenizer, record["messages"]))
    assert example.labels[:n] == [IGNORE] * n
    assert example.labels[n:] == example.input_ids[n:]
    assert example.targets == len(example.input_ids) - n and not example.truncated
    target_text = tokenizer.decode(example.input_ids[n:])
    assert target_text.startswith(QA[3][1])
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in example.input_ids[n:]


def test_system_message_stays_in_the_prompt(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}] + RECORDS[0]["messages"]
    example = encode_record(tokenizer, {"messages": messages}, 1000)
    n = len(prompt_ids(tokenizer, messages))
    assert "Be brief." in tokenizer.decode(example.input_ids[:n])
    assert example.labels[:n] == [IGNORE] * n


def test_long_answers_are_cut_and_long_prompts_skipped(tokenizer):
    record = RECORDS[5]
    n = len(prompt_ids(tokenizer, record["messages"]))
    cut = encode_record(tokenizer, record, n + 3)
    assert len(cut.input_ids) == n + 3 and cut.targets == 3 and cut.truncated
    assert cut.input_ids == encode_record(tokenizer, record, 1000).input_ids[: n + 3]
    with pytest.raises(SkipRecord, match="prompt_too_long"):
        encode_record(tokenizer, record, n)
    empty = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  "}]}
    examples, counts = encode_records(tokenizer, RECORDS + [empty], n + 3)
    assert counts["no_target"] == 1
    assert counts["prompt_too_long"] == sum(len(prompt_ids(tokenizer, r["messages"])) >= n + 3 for r in RECORDS)
    assert counts["truncated"] >= 1 and len(examples) == len(RECORDS) - counts["prompt_too_long"]


def test_bad_records_and_templates_are_named(tokenizer):
    with pytest.raises(TrainDataError, match="Record 1: The last message"):
        encode_records(tokenizer, [RECORDS[0], {"messages": RECORDS[0]["messages"][:1] * 2}], 100)
    with pytest.raises(TrainDataError, match="needs 'messages'"):
        encode_record(tokenizer, {"text": "no chat"}, 100)
    odd = copy.deepcopy(tokenizer)
    odd.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
    with pytest.raises(TrainDataError, match="not a token prefix"):
        encode_record(odd, RECORDS[0], 100)


# -- loss and batching ------------------------------------------------------------------------

def test_token_mean_loss_weighs_every_token_the_same():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 5)
    labels = torch.tensor([[IGNORE, IGNORE, IGNORE, IGNORE, IGNORE, 3],   # 1 target
                           [IGNORE, 1, 4, 0, 2, IGNORE]])                 # 4 targets (the last is padding)

    def nll(b, t):  # logits at t - 1 predict the label at t
        row = logits[b, t - 1].tolist()
        return -(row[int(labels[b, t])] - math.log(sum(math.exp(x) for x in row)))

    per_token = {0: [nll(0, 5)], 1: [nll(1, t) for t in range(1, 5)]}
    by_hand = sum(per_token[0] + per_token[1]) / 5
    mean_of_means = (sum(per_token[0]) / 1 + sum(per_token[1]) / 4) / 2
    loss = token_mean_loss(logits, labels)
    assert loss.item() == pytest.approx(by_hand, rel=1e-5)
    assert abs(by_hand - mean_of_means) > 1e-3
    # Divided by the targets of the whole step, batches add up to the token mean of their union.
    split = token_mean_loss(logits[:1], labels[:1], 5) + token_mean_loss(logits[1:], labels[1:], 5)
    assert split.item() == pytest.approx(by_hand, rel=1e-5)


def test_sequence_mean_loss_gives_long_answers_less_weight():
    """METHOD 2.3: the per-sequence mean differs from the token mean and under-weights long answers' tokens."""
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 5, requires_grad=True)
    labels = torch.tensor([[IGNORE, IGNORE, IGNORE, IGNORE, IGNORE, 3],   # 1 target
                           [IGNORE, 1, 4, 0, 2, IGNORE]])                 # 4 targets
    per_seq = [token_mean_loss(logits[:1], labels[:1]), token_mean_loss(logits[1:], labels[1:])]
    seq = sequence_mean_loss(logits, labels)
    tok = token_mean_loss(logits, labels)
    assert seq.item() == pytest.approx((per_seq[0].item() + per_seq[1].item()) / 2, rel=1e-5)
    assert abs(seq.item() - tok.item()) > 1e-3
    # per token, the gradient weight is 1/(2 x its sequence's targets) against 1/5 for every token
    seq_grad = torch.autograd.grad(seq, logits)[0].abs().sum(-1)
    tok_grad = torch.autograd.grad(tok, logits)[0].abs().sum(-1)
    assert (seq_grad[1] / tok_grad[1])[:4].allclose(torch.full((4,), 5 / 8))  # long answer: 1/8 vs 1/5
    assert (seq_grad[0, 4] / tok_grad[0, 4]).item() == pytest.approx(5 / 2)  # one-token answer: 1/2 vs 1/5
    # split over accumulated batches, divided by the step's sequences, the parts add up
    split = sequence_mean_loss(logits[:1], labels[:1], 2) + sequence_mean_loss(logits[1:], labels[1:], 2)
    assert split.item() == pytest.approx(seq.item(), rel=1e-6)
    with pytest.raises(ValueError, match="train loss"):
        TrainConfig(loss="mean")


def test_sequence_loss_trains_to_other_weights(tokenizer, tmp_path):
    weights = {}
    for loss in ("token", "sequence"):
        loaded = with_roles(tokenizer)
        config = TrainConfig(epochs=1, lr=1e-2, batch_size=3, log_every=0, loss=loss)
        stats = train_role(loaded, "generator", RECORDS, tmp_path / loss, config, progress=False)
        assert stats["complete"] and all(math.isfinite(x) for x in stats["losses"])
        weights[loss] = {n: p.detach().clone() for n, p in role_parameters(loaded.model, "generator").items()}
    assert any(not torch.allclose(weights["token"][n], weights["sequence"][n]) for n in weights["token"])


def test_records_are_checked_before_a_model_loads():
    good = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}
    assert encode_check([good]) == []
    problems = encode_check([good, {"text": "x"}, {"messages": [{"role": "user", "content": "Q"},
                                                                {"role": "bot", "content": "A"}]}])
    assert problems[0].startswith("record 2:") and problems[1].startswith("record 3:")


def test_loss_from_trimmed_logits_matches_the_full_forward(tiny, tokenizer):
    """Logits are only computed from the first target on; the loss must not change."""
    examples, _ = encode_records(tokenizer, RECORDS[:3], 1000)
    batch = collate(examples, tokenizer.pad_token_id)
    with torch.no_grad():
        logits = tiny.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    full = token_mean_loss(logits, batch["labels"]).item()
    assert eval_loss(tiny, None, RECORDS[:3], batch_size=3) == pytest.approx(full, rel=1e-5)


def test_batches_group_similar_lengths():
    lengths = [50, 10, 40, 12, 11, 45]
    assert make_batches(lengths, 2) == [[1, 4], [3, 2], [5, 0]]
    assert make_batches(lengths, 1) == [[1], [4], [3], [2], [5], [0]]
    assert make_batches(lengths, batch_tokens=100) == [[1, 4, 3], [2, 5], [0]]
    assert make_batches([500, 5], batch_tokens=100) == [[1], [0]]
    assert epoch_order(6, 0, 1) == epoch_order(6, 0, 1)
    assert sorted(epoch_order(6, 0, 1)) == list(range(6))
    assert epoch_order(6, 0, 0) != epoch_order(6, 0, 1)


# -- training ---------------------------------------------------------------------------------

def test_training_learns_and_touches_only_its_role(tokenizer, tmp_path):
    loaded = with_roles(tokenizer)
    model = loaded.model
    before = snapshot(model)
    grads_before = {n: p.requires_grad for n, p in model.named_parameters()}
    loss_before = eval_loss(loaded, "extender", RECORDS)
    config = TrainConfig(epochs=4, lr=1e-2, gradient_checkpointing=True, log_every=0)
    stats = train_role(loaded, "extender", RECORDS, tmp_path / "extender", config, progress=False)

    assert stats["steps"] == 24 and len(stats["losses"]) == 24 and stats["complete"]
    assert all(math.isfinite(x) for x in stats["losses"])
    assert stats["final_loss"] < 0.5 * stats["losses"][0]
    assert eval_loss(loaded, "extender", RECORDS) < 0.5 * loss_before
    assert stats["target_tokens"] == 4 * sum(e.targets for e in encode_records(tokenizer, RECORDS, 16384)[0])

    trained = set(role_parameters(model, "extender"))
    after = snapshot(model)
    assert all(torch.equal(before[n], after[n]) for n in before if n not in trained)
    assert all(not torch.equal(before[n], after[n]) for n in trained if "lora_B" in n)
    # The model is left as it was found: eval mode, no checkpointing, same active adapter and flags.
    assert not model.training and not is_checkpointing(model.get_base_model())
    assert model.active_adapter == "generator" and torch.is_grad_enabled()
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads_before
    assert not checkpoint_dir(tmp_path / "extender").exists()


def test_a_missing_role_or_empty_data_is_refused(tokenizer, tmp_path):
    with pytest.raises(TrainError, match="add_roles"):
        train_role(tiny_model(tokenizer), "generator", RECORDS, tmp_path / "g", progress=False)
    loaded = with_roles(tokenizer)
    with pytest.raises(TrainError, match="No record"):
        train_role(loaded, "generator", RECORDS[:1], tmp_path / "g", TrainConfig(max_seq_len=4), progress=False)


def test_resumed_run_equals_an_uninterrupted_one(tokenizer, tmp_path):
    # LoRA dropout makes the result depend on the restored random state too.
    config = TrainConfig(epochs=3, lr=1e-2, batch_size=2, grad_accum=2, save_every=2, log_every=0)
    whole = with_roles(tokenizer, dropout=0.1)
    ref = train_role(whole, "generator", RECORDS, tmp_path / "a" / "generator", config, progress=False)
    assert ref["steps"] == 6

    out = tmp_path / "b" / "generator"
    part = train_role(with_roles(tokenizer, dropout=0.1), "generator", RECORDS, out, config,
                      progress=False, stop_after_steps=3)
    assert part["steps"] == 3 and not part["complete"]
    assert (checkpoint_dir(out) / "checkpoint-3" / MARKER).is_file() and not out.exists()
    with pytest.raises(TrainError, match="other records or settings"):
        train_role(with_roles(tokenizer), "generator", RECORDS, out, TrainConfig(lr=1e-3), progress=False)

    resumed = with_roles(tokenizer, dropout=0.1)  # a fresh process: the model starts untrained
    stats = train_role(resumed, "generator", RECORDS, out, config, progress=False)
    assert stats["complete"] and stats["resumed_from_step"] == 3 and stats["steps"] == 6
    assert stats["losses"] == pytest.approx(ref["losses"], abs=1e-6)
    expected = role_parameters(whole.model, "generator")
    for name, p in role_parameters(resumed.model, "generator").items():
        assert torch.allclose(p, expected[name], atol=1e-6), name
    assert not checkpoint_dir(out).exists()

    again = with_roles(tokenizer, dropout=0.1)
    done = train_role(again, "generator", RECORDS, out, config, progress=False)
    assert done["loaded_existing"] and done["losses"] == stats["losses"]
    for name, p in role_parameters(again.model, "generator").items():
        assert torch.equal(p, expected[name]), name


def test_saved_adapter_loads_and_generates_the_same(tokenizer, tmp_path):
    from peft import PeftModel

    loaded = with_roles(tokenizer)
    out = tmp_path / "iteration-1" / "generator"
    train_role(loaded, "generator", RECORDS, out, TrainConfig(epochs=8, lr=1e-2, log_every=0), progress=False)
    assert {"adapter_config.json", "adapter_model.safetensors", MARKER} <= {p.name for p in out.iterdir()}

    requests = [ChatRequest(r["messages"][:-1], role="generator") for r in RECORDS[:3]]
    trained = [c.text for c in HFBackend(loaded, progress=False).generate(requests, GREEDY)]
    base = [c.text for c in HFBackend(loaded, progress=False).generate(
        [ChatRequest(r.messages) for r in requests], GREEDY)]
    assert trained != base

    via_roles = load_roles(learnable_tiny(tokenizer), out.parent, roles=["generator"])
    again = HFBackend(via_roles, progress=False).generate(requests, GREEDY)
    assert [c.text for c in again] == trained
    assert eval_loss(via_roles, "generator", RECORDS) == pytest.approx(eval_loss(loaded, "generator", RECORDS))

    plain = learnable_tiny(tokenizer)
    peft_model = PeftModel.from_pretrained(plain.model, str(out))
    as_default = LoadedModel(peft_model, tokenizer, plain.source, None, torch.float32, "cpu")
    requests = [ChatRequest(r.messages, role="default") for r in requests]
    assert [c.text for c in HFBackend(as_default, progress=False).generate(requests, GREEDY)] == trained


@pytest.mark.integration
def test_qlora_steps_on_the_real_4bit_model(embedded_dir, tmp_path):
    loaded = add_roles(load_base(quantization="nf4"), lora_config(r=4, alpha=8))
    model = loaded.model
    trained = set(role_parameters(model, "generator"))
    before = snapshot(model)
    config = TrainConfig(epochs=1, lr=1e-3, warmup_ratio=0.0, max_seq_len=256, gradient_checkpointing=True,
                         log_every=0)
    stats = train_role(loaded, "generator", RECORDS[:3], tmp_path / "generator", config, progress=False)

    assert stats["steps"] == 3 and all(math.isfinite(x) for x in stats["losses"])
    after = snapshot(model)
    assert any(not torch.equal(before[n], after[n]) for n in trained)
    frozen = [n for n in before if n not in trained]
    assert any(p.dtype == torch.uint8 for n, p in before.items() if n in frozen)  # the packed 4-bit weights
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    assert not is_checkpointing(model.get_base_model()) and not model.training
