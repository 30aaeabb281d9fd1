"""The GPU memory estimate: hand-computed sizes, monotonicity, and the colab-t4 preset on a T4."""

import pytest

from sltk import memory
from sltk.config import preset
from sltk.memory import (
    GIB,
    MODELS,
    T4_GIB,
    fits,
    generation_gib,
    generation_moments,
    kv_buffer_tokens,
    kv_cache_bytes,
    lora_parameters,
    shape,
    training_gib,
    training_moments,
    weight_bytes,
)

# A made-up model: 2 layers, hidden 64, MLP 128, 4 query heads of 16, 2 KV heads, vocabulary 1000.
TINY = {
    "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 1000, "tie_word_embeddings": False,
}
QWEN, LLAMA = MODELS["Qwen/Qwen2.5-7B-Instruct"], MODELS["meta-llama/Llama-3.1-8B-Instruct"]


def test_kv_cache_by_hand():
    # 2 (K and V) x 2 layers x 2 KV heads x 16 dims x 2 bytes x 100 tokens x 3 rows
    assert kv_cache_bytes(TINY, batch=3, tokens=100) == 2 * 2 * 2 * 16 * 2 * 100 * 3 == 76_800
    assert kv_cache_bytes(TINY, batch=3, tokens=100, kv_bytes=4) == 153_600
    # the growing cache's spare room: 256 positions, or a quarter when that is more
    assert kv_buffer_tokens(100) == 356 and kv_buffer_tokens(4000) == 5000
    decode = generation_moments(TINY, batch=2, context_tokens=1000, prompt_tokens=100)["decode"]
    assert decode["kv_cache"] == pytest.approx(2 * 2 * 2 * 16 * 2 * 1256 * 2 / GIB)
    # Qwen2.5-7B: 28 layers x 4 KV heads x 128 x 2 x 2 bytes = 56 KiB a token; Llama-3.1-8B: 128 KiB
    assert kv_cache_bytes(QWEN, 1, 1) == 56 * 1024 and kv_cache_bytes(LLAMA, 1, 1) == 128 * 1024


def test_nf4_weights_by_hand():
    # linear weights a layer: q 64x64, k and v 64x32, o 64x64, gate/up/down 64x128 = 36,864; two layers
    params = 2 * (64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 128)
    assert params == 73_728
    w = weight_bytes(TINY)
    # 4-bit codes + one 8-bit absmax per 64 weights + one fp32 absmax per 256 blocks
    assert w["linear"] == pytest.approx(params / 2 + params / 64 + params / (64 * 256) * 4) == 38_034
    # embeddings and lm_head (untied) and 5 norms stay in fp16
    assert w["embeddings"] == (2 * 1000 * 64 + 5 * 64) * 2
    assert weight_bytes({**TINY, "tie_word_embeddings": True})["embeddings"] == (1000 * 64 + 5 * 64) * 2
    assert weight_bytes(TINY, quantization=None)["linear"] == params * 2
    with pytest.raises(ValueError):
        weight_bytes(TINY, quantization="int3")


def test_parameter_counts_of_the_real_models():
    for cfg, billions in ((QWEN, 7.615), (LLAMA, 8.030)):
        w = weight_bytes(cfg, quantization=None, compute_dtype_bytes=1)  # one byte a parameter: a count
        assert (w["linear"] + w["embeddings"]) / 1e9 == pytest.approx(billions, abs=0.005)
    assert weight_bytes(QWEN)["linear"] / GIB == pytest.approx(3.135, abs=0.001)


def test_lora_parameters_by_hand():
    # r x (in + out): q 4x128, k 4x96, v 4x96, o 4x128, gate/up/down 4x192; two layers
    assert lora_parameters(TINY, r=4) == 2 * (512 + 384 + 384 + 512 + 3 * 768) == 8192
    assert lora_parameters(TINY, r=4, lora_targets=["q_proj", "v_proj"]) == 2 * (512 + 384)
    assert lora_parameters(QWEN, r=8) == 20_185_088
    with pytest.raises(ValueError):
        lora_parameters(TINY, lora_targets=["qkv"])


def test_shape_from_a_transformers_config_and_defaults():
    from transformers import LlamaConfig

    s = shape(LlamaConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                          num_key_value_heads=2, vocab_size=1000, tie_word_embeddings=False))
    assert (s.layers, s.head_dim, s.kv_heads, s.q_dim, s.kv_dim, s.tied) == (2, 16, 2, 64, 32, False)
    no_head_dim = {k: v for k, v in TINY.items() if k != "head_dim"}
    assert shape(no_head_dim).head_dim == 16
    with pytest.raises(ValueError):
        shape({"hidden_size": 64})


def test_every_breakdown_adds_up():
    for m in (*generation_moments(QWEN, 3, 5632, 4096).values(), *training_moments(LLAMA, 3072).values()):
        parts = sum(v for k, v in m.items() if k != "total")
        assert m["total"] == pytest.approx(parts)
        assert m["overhead"] == memory.OVERHEAD_GIB


@pytest.mark.parametrize("cfg", [TINY, QWEN, LLAMA])
def test_more_batch_or_context_needs_more_memory(cfg):
    base = generation_gib(cfg, batch=2, context_tokens=2048, prompt_tokens=512)["total"]
    assert generation_gib(cfg, batch=4, context_tokens=2048, prompt_tokens=512)["total"] > base
    assert generation_gib(cfg, batch=2, context_tokens=4096, prompt_tokens=512)["total"] > base
    assert generation_gib(cfg, batch=2, context_tokens=4096, prompt_tokens=2048)["total"] > \
        generation_gib(cfg, batch=2, context_tokens=4096, prompt_tokens=512)["total"]
    train = training_gib(cfg, seq_len=2048)["total"]
    assert training_gib(cfg, seq_len=4096)["total"] > train
    assert training_gib(cfg, seq_len=2048, batch=2)["total"] > train
    assert training_gib(cfg, seq_len=2048, lora_r=64)["total"] > train
    assert training_gib(cfg, seq_len=2048, gradient_checkpointing=False)["total"] > train


def test_training_logits_and_attention_terms():
    # the loss: 12 bytes per position and vocabulary entry (fp16 logits, fp32 copy, fp32 log-softmax; backward)
    loss = training_moments(QWEN, 3072)["loss"]
    assert loss["logits"] == pytest.approx(12 * 3072 * 152064 / GIB)
    assert training_moments(QWEN, 3072, logit_tokens=1024)["loss"]["logits"] == pytest.approx(12 * 1024 * 152064 / GIB)
    # the math kernel's fp32 scores (softmax and gradients: 12 bytes) for a grouped-query model without flash
    layer = training_moments(LLAMA, 4096)["layer"]
    assert layer["attention"] == pytest.approx((32 * 4096 * 4096 * 12 + 4096 * 4096 * 4) / GIB)
    assert training_moments(LLAMA, 4096, flash_attention=True)["layer"]["attention"] == 0.0
    # a model without grouped KV heads gets the memory-efficient kernel
    mha = {**LLAMA, "num_key_value_heads": 32}
    assert training_moments(mha, 4096)["layer"]["attention"] == 0.0


def test_generation_prefill_logits_and_single_row_scores():
    # three padded prompts at once: fp16 logits of the last position (HFBackend._prefill), or of all of them
    prefill = generation_moments(QWEN, 3, 5632, 4096, prefill_logits="all")["prefill"]
    assert prefill["logits"] == pytest.approx(3 * 4096 * 152064 * 2 / GIB)
    last = generation_moments(QWEN, 3, 5632, 4096)["prefill"]
    assert last.get("logits", 0.0) < prefill["logits"] / 1000 and last["total"] < prefill["total"]
    # one unpadded prompt: the math kernel's fp32 scores and softmax (8 bytes) per head
    refill = generation_moments(LLAMA, 3, 5632, 4096)["refill"]
    assert refill["attention"] == pytest.approx((32 * 4096 * 4096 * 8 + 4096 * 4096 * 4) / GIB)
    assert generation_moments(LLAMA, 3, 5632, 4096, flash_attention=True)["refill"]["attention"] == 0.0


def test_colab_t4_fits_a_t4_for_both_models():
    config = preset("colab-t4")
    assert config.train.gradient_checkpointing and config.quantization == "nf4" and config.dtype == "float16"
    for cfg in (QWEN, LLAMA):
        result = fits(cfg, config)
        assert result["fits"] and result["gpu_gib"] == T4_GIB
        assert result["peak"] <= T4_GIB - 1.5, result["table"]  # a margin on the 14.75 GiB torch sees
        assert fits(cfg, config, gpu_gib=16)["fits"]
        assert set(result["rows"]) == {"drafts", "extension", "training"}
        assert "fits" in result["table"] and "extension" in result["table"]


def test_twice_the_batch_and_lengths_would_not_fit():
    config = preset("colab-t4")
    doubled = preset("colab-t4", batch_size=2 * config.batch_size, **{
        "sampling.max_new_tokens": 2 * config.sampling.max_new_tokens,
        "train.max_seq_len": 2 * config.train.max_seq_len,
    })
    for cfg in (QWEN, LLAMA):
        result = fits(cfg, doubled, gpu_gib=16)
        assert not result["fits"]
        # each of the three workloads that grew is over on its own
        assert result["rows"]["extension"]["total"] > 16 and result["rows"]["training"]["total"] > 16
    # so would the preset's former values (batch 8, 4096 new tokens, 6144-token sequences)
    former = preset("colab-t4", batch_size=8, **{"sampling.max_new_tokens": 4096, "train.max_seq_len": 6144})
    assert not any(fits(cfg, former, gpu_gib=16)["fits"] for cfg in (QWEN, LLAMA))


def test_workloads_follow_the_config():
    w = memory.workloads(preset("colab-t4"))
    # prompt: 256 template tokens + a 256-token query; stage 2 holds (1 + 2 x 2/3) x 1536 more
    assert w["drafts"] == {"prompt_tokens": 512, "context_tokens": 512 + 2048}  # the evaluation's cap is longer
    assert w["extension"] == {"prompt_tokens": 4096, "context_tokens": 4096 + 1536}
    assert w["training"] == {"seq_len": 3072, "batch": 1}
    one_round = memory.workloads(preset("colab-t4", **{"extend.micro_rounds": 1}))
    assert one_round["extension"]["prompt_tokens"] == 512 + 1536 + 1024
