"""sltk stays on transformers' and peft's supported surface: its own calls raise no deprecation."""

import logging
import warnings

from conftest import tiny_model

from sltk.backends import HFBackend
from sltk.chat import ChatRequest, Sampling
from sltk.models import add_roles, lora_config
from sltk.train import TrainConfig, train_role

RECORDS = [{"messages": [{"role": "user", "content": f"Write about {t}."},
                         {"role": "assistant", "content": f"{t.title()} is a subject with a long history. " * 4}]}
           for t in ("rivers", "salt", "bridges")]


class _Log(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _deprecations(caught, log):
    said = [f"{w.category.__name__}: {w.message}" for w in caught
            if issubclass(w.category, (DeprecationWarning, FutureWarning, PendingDeprecationWarning))]
    return said + [line for line in log.lines if "deprecat" in line.lower()]


def test_generation_and_training_raise_no_deprecation(tokenizer, tmp_path):
    loaded = add_roles(tiny_model(tokenizer), lora_config(r=4, alpha=8))
    log = _Log()
    logging.getLogger("transformers").addHandler(log)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            backend = HFBackend(loaded, batch_size=2, progress=False)
            asks = [ChatRequest([{"role": "user", "content": q}], role=r, id=q)
                    for q, r in (("Hi", "generator"), ("Explain tides.", "extender"), ("Why?", None))]
            out = backend.generate(asks, Sampling(temperature=0.7, max_new_tokens=8, stop=()), seed=1)
            assert len(out) == 3 and backend.last_stats["decode_steps"] > 0
            stats = train_role(loaded, "generator", RECORDS, tmp_path / "g",
                               TrainConfig(epochs=1, batch_size=1, log_every=0), progress=False)
            assert stats["complete"]
    finally:
        logging.getLogger("transformers").removeHandler(log)
    assert _deprecations(caught, log) == []


def test_replacing_the_roles_with_saved_ones_does_not_warn(tokenizer, tmp_path):
    from sltk.models import load_roles, save_roles, use_role

    loaded = add_roles(tiny_model(tokenizer), lora_config(r=4, alpha=8, init_lora_weights=False))
    save_roles(loaded, tmp_path / "adapters")
    with use_role(loaded.model, "generator"):
        pass
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_roles(loaded, tmp_path / "adapters", trainable=True)
        load_roles(loaded, tmp_path / "adapters")
    assert [str(w.message) for w in caught] == []
    assert set(loaded.model.peft_config) == {"generator", "extender"}


def test_loading_saved_roles_onto_a_plain_base_does_not_warn(tokenizer, tmp_path):
    """The first role loaded wraps the plain model in PEFT, which reads a property transformers deprecates."""
    from sltk.models import load_roles, save_roles

    save_roles(add_roles(tiny_model(tokenizer), lora_config(r=4, alpha=8)), tmp_path / "adapters")
    plain = tiny_model(tokenizer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_roles(plain, tmp_path / "adapters")
    assert _deprecations(caught, _Log()) == []
    assert set(plain.model.peft_config) == {"generator", "extender"}
