"""The typed configuration: upstream defaults, presets, changes, YAML round trip."""

from pathlib import Path

import pytest

from sltk.config import PRESETS, Config, merge, preset


def test_defaults_are_the_upstream_recipe():
    c = Config()
    q = c.queries
    assert (q.per_iteration, q.max_tries, q.min_words, q.max_words) == (5000, 10, 3, 500)
    assert (c.drafts.per_query, c.drafts.max_tries) == (2, 20)
    assert (c.extend.attempts, c.extend.micro_rounds, c.extend.min_growth, c.extend.max_tries) == (2, 3, 1.2, 20)
    assert (c.lora.r, c.lora.alpha, c.lora.dropout, c.lora.target_modules) == (8, 16, 0.0, "all-linear")
    assert (c.train.epochs, c.train.lr, c.train.warmup_ratio, c.train.batch_size) == (4, 1e-4, 0.1, 1)
    assert c.train.max_seq_len == 16384 and c.train.line_keep_prob == 0.8
    assert (c.sampling.temperature, c.sampling.top_p, c.sampling.top_k) == (0.7, 0.8, 20)
    assert (c.final.min_words, c.final.max_words) == (2000, 8000)
    assert c.iterations == 3


def test_every_preset_builds_and_paper_is_the_default():
    for name in PRESETS:
        assert preset(name).name == name
    assert preset("paper").to_dict() == Config(name="paper").to_dict()
    demo = preset("cpu-demo")
    assert demo.iterations >= 2 and demo.languages == ("en",)
    assert demo.lora.r == 32 and demo.train.epochs == 6 and demo.lora.top_layers == 10
    assert demo.kv_cache_dtype == "bfloat16" and demo.quantization is None


def test_changes_with_dotted_keys():
    c = preset("smoke", **{"train.lr": 3e-4, "iterations": 1})
    assert c.train.lr == 3e-4 and c.iterations == 1
    assert c.train.epochs == preset("smoke").train.epochs  # untouched siblings stay


def test_unknown_settings_are_named():
    with pytest.raises(ValueError, match=r"train: unknown setting\(s\) \['lrr'\]"):
        merge(Config(), {"train.lrr": 1})
    with pytest.raises(ValueError, match="Unknown preset 'fast'"):
        preset("fast")


def test_yaml_round_trip(tmp_path):
    c = preset("cpu-demo", name="x")
    c.save(tmp_path / "config.yaml")
    back = Config.load(tmp_path / "config.yaml")
    assert back == c
    assert back.sampling.stop == c.sampling.stop and isinstance(back.sampling.stop, tuple)


def test_the_forced_choice_judge_has_one_name():
    from sltk.config import QueryConfig

    assert preset("cpu-demo").queries.judge_mode == "choice"
    assert QueryConfig(judge_mode="logprob").judge_mode == "choice"  # read from an older run folder


@pytest.mark.parametrize("changes, named", [
    ({"extend.min_growth": 0.5}, "extend.min_growth = 0.5 must be at least 1"),
    ({"sampling.max_new_tokens": 0}, "sampling.max_new_tokens = 0 must be at least 1"),
    ({"train.lr": -1e-4}, "train.lr = -0.0001 must be above 0"),
    ({"iterations": 0}, "iterations = 0 must be at least 1"),
    ({"iterations": "abc"}, "iterations = 'abc': expected int, got str"),
    ({"sampling.top_p": 1.5}, "sampling.top_p = 1.5 must be in (0, 1]"),
    ({"languages": ["fr"]}, "languages = ('fr',) must be a non-empty list"),
    ({"languages": "en"}, "languages = 'en': expected a list"),
    ({"queries.min_words": 900}, "queries.min_words = 900 must not exceed queries.max_words = 500"),
    ({"train.line_keep_prob": 2}, "train.line_keep_prob = 2.0 must be in [0, 1]"),
    ({"agentwrite.plan_style": "essay"}, "agentwrite.plan_style = 'essay' must be 'longwriter' or 'outline'"),
    ({"eval.control": "yes"}, "eval.control = 'yes': expected bool"),
    ({"train.processes": 0}, "train.processes = 0 must be at least 1"),
    ({"train.accelerate_config": "fsdp2"}, "train.accelerate_config = 'fsdp2' is no file: give ddp, fsdp, zero3"),
])
def test_settings_that_cannot_work_are_refused_by_name(changes, named):
    from sltk.config import ConfigError

    with pytest.raises(ConfigError) as err:
        preset("cpu-demo", **changes)
    assert named in str(err.value)


def test_every_preset_passes_the_checks_and_numbers_convert():
    for name in PRESETS:
        preset(name)
    assert preset("smoke", **{"train.lr": 3}).train.lr == 3.0  # an int where a float is asked


def test_the_accelerate_configurations_are_named_and_resolved():
    import yaml

    from sltk.config import ACCELERATE, accelerate_file
    from sltk.config import check as check_config
    from sltk.launch import command

    kinds = {"ddp": "MULTI_GPU", "fsdp": "FSDP", "zero3": "DEEPSPEED"}
    for name in ACCELERATE:
        assert yaml.safe_load(accelerate_file(name).read_text())["distributed_type"] == kinds[name]
    config = check_config(preset("smoke", **{"train.accelerate_config": "zero3", "train.processes": 4}))
    cmd = command(Path("runs/x"), "generator", 1, Path("d.jsonl"), Path("o"), config.train)
    assert cmd[cmd.index("--config_file") + 1] == str(accelerate_file("zero3"))
    assert cmd[cmd.index("--num_processes") + 1] == "4" and cmd[cmd.index("-m", 3) + 1] == "sltk.cli"
    plain = command(Path("r"), "extender", 0, Path("d"), Path("o"), preset("smoke", **{"train.processes": 2}).train)
    assert "--multi_gpu" in plain and plain[plain.index("--num_processes") + 1] == "2"
