"""Model resolution and role handling errors (no model download)."""

import pytest

from sltk import embedded
from sltk.models import ModelError, load_base, resolve_model, use_role


def test_embedded_aliases_resolve_to_the_converted_checkpoint(embedded_dir):
    for name in (None, "embedded", "SmolLM2-135M-Instruct", "smollm2-135m"):
        assert resolve_model(name) == str(embedded_dir)


def test_a_local_folder_is_used_as_is(embedded_dir):
    assert resolve_model(embedded_dir) == str(embedded_dir)


def test_missing_path_is_named(tmp_path):
    with pytest.raises(ModelError, match="no such folder"):
        resolve_model(str(tmp_path / "nowhere" / "model"))
    with pytest.raises(ModelError, match="no such folder"):
        resolve_model("./not-here")


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(tmp_path)


def test_unknown_hub_id_names_the_problem_offline():
    with pytest.raises(ModelError, match="Could not find model 'no-such-org/no-such-model'.*HF_HUB_OFFLINE"):
        resolve_model("no-such-org/no-such-model")


def test_bad_quantization_is_refused():
    with pytest.raises(ModelError, match="quantization='int3'"):
        load_base("embedded", quantization="int3")


def test_unknown_role_is_refused(tiny):
    with pytest.raises(ModelError, match="Unknown role 'writer'"):
        with use_role(tiny.model, "writer"):
            pass


def test_cache_root_follows_sltk_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SLTK_CACHE", str(tmp_path))
    assert embedded.model_dir() == tmp_path / "models" / embedded.NAME
    monkeypatch.delenv("SLTK_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert embedded.cache_root() == tmp_path / "xdg" / "sltk"


def test_top_layers_puts_adapters_on_the_last_layers_only(tiny):
    from sltk.models import add_roles, lora_config

    add_roles(tiny, lora_config(r=2, alpha=4, top_layers=1, model=tiny.model))
    adapted = {n.split(".layers.")[1].split(".")[0] for n, _ in tiny.model.named_parameters() if "lora_A" in n}
    assert adapted == {"1"}  # the tiny model has layers 0 and 1
    with pytest.raises(ValueError, match="needs the model"):
        lora_config(top_layers=2)


def test_footprint_counts_trainable_parameters(tiny):
    from sltk.models import add_roles, footprint, lora_config

    before = footprint(tiny.model)
    assert before["parameters"] > 0 and before["weights_MiB"] > 0
    add_roles(tiny, lora_config(r=2, alpha=4))
    after = footprint(tiny.model)
    assert after["parameters"] > before["parameters"] and after["trainable"] > 0


def test_placement_is_what_load_base_uses_and_names_a_bad_dtype():
    import torch

    from sltk.models import pick_dtype, placement

    assert placement("cpu") == ("cpu", pick_dtype("cpu", None))
    assert placement("cpu", "bfloat16", "nf4") == ("cpu", torch.bfloat16)
    with pytest.raises(ModelError, match="'bfloat17' is not a torch dtype"):
        placement("cpu", "bfloat17")


def test_peak_memory_reports_the_process_in_gib():
    from sltk.models import peak_memory

    peak = peak_memory()
    assert 0.01 < peak["process_gib"] < 1024  # a Python process with torch loaded: tens of MiB at least
