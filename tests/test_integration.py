"""The real embedded model: 4-bit and unquantised loading, roles, pre-fill, save/reload, runaway loops."""

import pytest
import torch

from sltk.backends import HFBackend
from sltk.chat import ChatRequest, Sampling
from sltk.models import add_roles, is_4bit, load_base, load_roles, lora_config, save_roles
from sltk.text import count_words

pytestmark = pytest.mark.integration

GREEDY = Sampling(temperature=0, max_new_tokens=40, stop=(), loop_tokens=0)
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def ask(text, role=None, prefill="", max_new_tokens=None):
    return ChatRequest([{"role": "user", "content": text}], prefill=prefill, role=role, max_new_tokens=max_new_tokens)


def test_nf4_linear_layers_really_are_4bit(smol_nf4):
    import bitsandbytes as bnb

    model = smol_nf4.model
    layers = [m for name, m in model.named_modules() if name.split(".")[-1] in LINEARS]
    assert len(layers) == 30 * 7
    assert all(isinstance(m, bnb.nn.Linear4bit) for m in layers)
    for m in layers:
        assert m.weight.dtype == torch.uint8  # packed 4-bit values, two per byte
        assert m.weight.quant_state.quant_type == "nf4"
        assert m.weight.quant_state.nested  # double quantisation of the scales
        assert m.weight.numel() * 2 == m.in_features * m.out_features
    assert is_4bit(model)
    assert smol_nf4.quantization == "nf4"


def test_unquantised_model_is_plain_float_on_the_cpu(smol_bf16, smol_fp32, smol_nf4):
    assert not is_4bit(smol_bf16.model)
    assert smol_bf16.model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    # the measured-faster CPU defaults: float32 unquantised, bf16 compute in 4-bit
    assert smol_fp32.dtype == torch.float32 and smol_nf4.dtype == torch.bfloat16
    assert smol_nf4.model.get_memory_footprint() < 0.6 * smol_bf16.model.get_memory_footprint()


def test_nf4_batch_with_roles_and_prefill():
    loaded = add_roles(load_base(quantization="nf4"))
    assert loaded.roles == ["extender", "generator"]
    backend = HFBackend(loaded, batch_size=4, progress=False)
    reqs = [
        ask("Write a short poem about autumn.", role="generator"),
        ask("Describe a busy market.", role="extender"),
        ask("Tell a story about a fox.", prefill="Once upon a time, in a quiet forest,"),
        ask("Give one tip for studying.", role=None),
    ]
    out = backend.generate(reqs, Sampling(max_new_tokens=48), seed=0)
    assert all(c.tokens > 0 and c.text.strip() for c in out)
    assert out[2].prompt_tokens > backend.generate([ask("Tell a story about a fox.")], GREEDY)[0].prompt_tokens
    assert backend.last_stats["tokens"] > 0


def test_prefill_is_continued_not_restarted(smol_fp32):
    backend = HFBackend(smol_fp32, batch_size=2, progress=False)
    full = backend.generate([ask("Write a paragraph about the history of tea.")], GREEDY)[0].text
    words = full.split(" ")
    prefill = " ".join(words[:8])
    cont = backend.generate([ask("Write a paragraph about the history of tea.", prefill=prefill)],
                            GREEDY.with_(max_new_tokens=12))[0].text
    # greedy decoding from the same prefix continues exactly where the full answer went on
    assert (prefill + cont).split()[:12] == full.split()[:12]


@pytest.fixture(scope="module")
def with_roles():
    """bf16 base with two randomly initialised (non-zero) role adapters, so each role changes the output."""
    torch.manual_seed(0)
    return add_roles(load_base(quantization=None), lora_config(r=8, alpha=16, init_lora_weights=False))


def test_switching_the_role_changes_the_output(with_roles):
    backend = HFBackend(with_roles, batch_size=3, progress=False)
    q = "Explain why the sea is salty."
    base, gen, ext = backend.generate([ask(q), ask(q, "generator"), ask(q, "extender")], GREEDY)
    assert len({base.text, gen.text, ext.text}) == 3
    again = backend.generate([ask(q)], GREEDY)[0]
    assert again.text == base.text  # the base is untouched after using adapters


def test_roles_save_and_reload_identically(with_roles, tmp_path):
    backend = HFBackend(with_roles, batch_size=2, progress=False)
    q = "Name three rivers and describe them."
    before = backend.generate([ask(q, "generator"), ask(q, "extender")], GREEDY)
    save_roles(with_roles, tmp_path)
    for role in ("generator", "extender"):
        assert (tmp_path / role / "adapter_config.json").is_file()
        assert (tmp_path / role / "adapter_model.safetensors").is_file()
    fresh = load_roles(load_base(quantization=None), tmp_path)
    after = HFBackend(fresh, batch_size=2, progress=False).generate(
        [ask(q, "generator"), ask(q, "extender")], GREEDY
    )
    assert [c.text for c in after] == [c.text for c in before]


def test_adapter_folder_loads_with_plain_peft(with_roles, tmp_path):
    from peft import PeftModel

    save_roles(with_roles, tmp_path)
    base = load_base(quantization=None)
    model = PeftModel.from_pretrained(base.model, str(tmp_path / "generator"))
    assert "default" in model.peft_config


def test_a_looping_request_no_longer_holds_the_batch(smol_fp32):
    """Greedy decoding of this prompt loops ("She loved to be brave and brave. ..."): the guard stops it."""
    backend = HFBackend(smol_fp32, batch_size=3, progress=False)
    reqs = [
        ask("Write a long story about a cat."),
        ask("What is the capital of France? Answer in one short sentence."),
        ask("Say hello in one word."),
    ]
    cap = 320
    unguarded = backend.generate(reqs, Sampling(temperature=0, repetition_penalty=1.0, max_new_tokens=cap,
                                                loop_tokens=0))
    steps_unguarded = backend.last_stats["decode_steps"]
    guarded = backend.generate(reqs, Sampling(temperature=0, repetition_penalty=1.0, max_new_tokens=cap))
    steps_guarded = backend.last_stats["decode_steps"]
    assert unguarded[0].finish_reason == "length" and unguarded[0].tokens == cap
    assert guarded[0].finish_reason == "repetition"
    assert guarded[0].tokens < cap // 2
    assert steps_guarded < steps_unguarded // 2
    # the short answers are the same either way
    assert [c.text for c in guarded[1:]] == [c.text for c in unguarded[1:]]
    assert count_words(guarded[0].text) > 20
