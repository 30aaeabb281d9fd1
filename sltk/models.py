"""Resolve and load the base model (4-bit NF4 for QLoRA, or unquantised) and its two LoRA roles.

The Generator and the Extender are two named LoRA adapters on one base model (PEFT
multi-adapter). `use_role` switches between them, or to the plain base, for a block of calls.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from . import embedded
from .chat import BASE, ModelError

ROLES = ("generator", "extender")
QUANTIZATIONS = ("nf4", None)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class LoadedModel:
    """A base model (optionally with roles attached) and what it was loaded with."""

    model: torch.nn.Module
    tokenizer: object
    source: str
    quantization: str | None
    dtype: torch.dtype
    device: str

    @property
    def roles(self) -> list[str]:
        return sorted(getattr(self.model, "peft_config", {}) or {})


def resolve_model(model: str | os.PathLike | None = None) -> str:
    """Turn 'embedded' (or None), a local folder or a hub id into what `from_pretrained` takes."""
    if model is None or (isinstance(model, str) and embedded.is_alias(model)):
        return str(embedded.ensure_checkpoint())
    text = str(model)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelError(
                f"{path} is not a Hugging Face model folder (no config.json in it). "
                "Pass a folder written by save_pretrained, a hub id such as "
                "'Qwen/Qwen2.5-7B-Instruct', or 'embedded'."
            )
        return str(path)
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or not _HUB_ID.match(text):
        raise ModelError(
            f"Model '{text}': no such folder, and not a valid hub id. "
            "Check the path, or use a hub id like 'Qwen/Qwen2.5-7B-Instruct', or 'embedded'."
        )
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(text)
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
        hint = (
            "HF_HUB_OFFLINE is set, so only models already in the Hugging Face cache can load; "
            "download it first on a connected machine or pass a local folder."
            if offline
            else "Check the spelling and your access to it, or pass a local folder."
        )
        raise ModelError(f"Could not find model '{text}': {hint} ({type(exc).__name__})") from exc
    return text


def footprint(model) -> dict:
    """Parameter counts and the bytes the weights take (4-bit weights count at their packed size)."""
    params = list(model.parameters())
    return {
        "parameters": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "weights_MiB": round(sum(p.numel() * p.element_size() for p in params) / 2**20, 1),
        "buffers_MiB": round(sum(b.numel() * b.element_size() for b in model.buffers()) / 2**20, 1),
    }


def pick_device(device: str | None = None) -> str:
    """'cuda' when a GPU is visible, else 'cpu' (an explicit choice wins).

    In one of several training processes (`accelerate launch`, torchrun) 'cuda' is the process's
    own GPU, `cuda:<LOCAL_RANK>`."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def torch_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A torch dtype from itself or its name ('bfloat16', 'float32', ...); None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if not isinstance(getattr(torch, str(dtype), None), torch.dtype):
        raise ModelError(f"dtype {dtype!r} is not a torch dtype; use e.g. 'bfloat16', 'float16' or 'float32'.")
    return getattr(torch, dtype)


def pick_dtype(device: str, quantization: str | None = None) -> torch.dtype:
    """bf16 on Ampere and later, fp16 on older GPUs (T4, V100); float32 or bf16 on the CPU.

    CPU, unquantised: float32, the weights as converted, with no rounding. bf16 is faster only on
    CPUs whose matrix kernels use bf16 instructions, and its rounded weights write other texts (see
    docs/performance.md); `dtype="bfloat16"` picks it. CPU, 4-bit: bf16 compute, which runs
    bitsandbytes' CPU 4-bit layers faster than float32.
    """
    if device.startswith("cuda"):
        major, _ = torch.cuda.get_device_capability(torch.device(device))
        return torch.bfloat16 if major >= 8 else torch.float16
    return torch.bfloat16 if quantization == "nf4" else torch.float32


def nf4_config(compute_dtype: torch.dtype):
    """QLoRA's 4-bit setting: NF4 weights with double quantisation of the scales."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        # FSDP and ZeRO-3 shard only floating-point tensors: there the packed weights are stored in the
        # compute dtype (bitsandbytes reads them the same either way).
        bnb_4bit_quant_storage=compute_dtype if sharded() else torch.uint8,
    )


def sharded() -> bool:
    """Whether this process is one of an `accelerate launch` that shards the weights (FSDP or ZeRO-3)."""
    return (os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
            or os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3")


def placement(device: str | None = None, dtype: torch.dtype | str | None = None,
              quantization: str | None = None) -> tuple[str, torch.dtype]:
    """The device and compute dtype `load_base` uses for these settings (None: pick)."""
    device = pick_device(device)
    return device, torch_dtype(dtype) or pick_dtype(device, quantization)


def peak_memory() -> dict:
    """Peak memory of this process so far, in GiB: resident set and, on CUDA, what torch allocated."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    peak = {"process_gib": round(rss / (2**30 if sys.platform == "darwin" else 2**20), 2)}
    if torch.cuda.is_available():
        peak["gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return peak


def load_base(
    model: str | os.PathLike | None = None,
    quantization: str | None = "nf4",
    dtype: torch.dtype | str | None = None,
    device: str | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load the base model and tokenizer, in 4-bit NF4 (`quantization="nf4"`) or unquantised (None).

    Weights load only from safetensors files (a pickled `.bin` can run code when it is read), and a
    model's own Python code only with `trust_remote_code`.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if quantization not in QUANTIZATIONS:
        raise ModelError(f"quantization={quantization!r} is not supported; use 'nf4' or None.")
    source = resolve_model(model)
    device, dtype = placement(device, dtype, quantization)
    kwargs = {"dtype": dtype, "device_map": device}
    if quantization == "nf4":
        kwargs["quantization_config"] = nf4_config(dtype)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(f"Model '{source}' has no chat template; sltk needs an instruct/chat model.")
    if Path(source).is_dir() and not any(Path(source).glob("*.safetensors")):
        raise ModelError(f"Model '{source}' has no safetensors weights. sltk loads no pickled .bin weights (reading "
                         "one can run code); save the model with safetensors (save_pretrained does by default) "
                         "or pick a model that has them.")
    net = AutoModelForCausalLM.from_pretrained(source, use_safetensors=True, trust_remote_code=trust_remote_code,
                                               **kwargs)
    net.eval()
    return LoadedModel(net, tokenizer, source, quantization, dtype, device)


def lora_config(r: int = 8, alpha: int = 16, dropout: float = 0.0, target_modules="all-linear",
                top_layers: int | None = None, model=None, **kw):
    """The LoRA setting of a role (upstream recipe by default: all linear layers, r 8, alpha 16).

    `top_layers` (with `model`) puts adapters on the linear layers of the last N decoder layers
    only: the backward pass then stops there, which cuts training time where compute is scarce.
    """
    from peft import LoraConfig

    if top_layers is not None:
        if model is None:
            raise ValueError("lora_config(top_layers=...) needs the model, to find its decoder layers.")
        target_modules = _top_linear_modules(model, top_layers)

    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        task_type="CAUSAL_LM",
        **kw,
    )


def _top_linear_modules(model, n: int) -> list[str]:
    """Names of the nn.Linear modules inside the last `n` decoder layers (`...layers.<i>....`)."""
    found = {}
    for name, module in model.named_modules():
        m = re.search(r"\.layers\.(\d+)\.", name)
        if m and isinstance(module, torch.nn.Linear) and "lora_" not in name:
            found.setdefault(int(m.group(1)), []).append(name)
    if not found:
        raise ValueError("top_layers: no '.layers.<i>.' linear modules found in this model; use top_layers=None.")
    keep = sorted(found)[-n:]
    return [name for i in keep for name in found[i]]


@contextlib.contextmanager
def _peft_reads_deprecated_property():
    """PEFT, wrapping a model, reads `is_gradient_checkpointing`, which transformers 5 marks deprecated:
    a warning about PEFT's code, not the caller's."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def add_roles(loaded: LoadedModel, config=None, roles=ROLES) -> LoadedModel:
    """Attach fresh LoRA adapters named after the roles (Generator, Extender) to the base model."""
    from peft import PeftModel, get_peft_model

    config = config or lora_config()
    net = loaded.model
    if not isinstance(net, PeftModel):
        with _peft_reads_deprecated_property():
            net = get_peft_model(net, config, adapter_name=roles[0])
        roles = roles[1:]
    for role in roles:
        if role not in net.peft_config:
            net.add_adapter(role, config)
    loaded.model = net
    return loaded


def reset_role(loaded: LoadedModel, role: str) -> LoadedModel:
    """Give a role's adapter fresh LoRA weights (A random, B zero: the base model's output), in place."""
    from peft.tuners.lora import LoraLayer

    layers = [m for m in loaded.model.modules() if isinstance(m, LoraLayer) and role in m.lora_A]
    if not layers:
        raise ModelError(f"The model has no adapter '{role}': attach the roles first (add_roles).")
    for module in layers:
        module.reset_lora_parameters(role, True)
    return loaded


def check_adapter(folder: str | os.PathLike) -> None:
    """An adapter folder loads only from safetensors weights (a pickled .bin can run code when read)."""
    folder = Path(folder)
    if not (folder / "adapter_model.safetensors").is_file():
        found = sorted(p.name for p in folder.glob("adapter_model.*")) if folder.is_dir() else []
        raise ModelError(f"Adapter {folder} has no adapter_model.safetensors (found {found or 'nothing'}). sltk "
                         "loads adapters only from safetensors; save it with PEFT's save_pretrained (the default).")


def load_roles(loaded: LoadedModel, folder: str | os.PathLike, roles=ROLES, trainable: bool = False) -> LoadedModel:
    """Load saved role adapters from `folder/<role>/` (standard PEFT adapter folders)."""
    from peft import PeftModel

    folder = Path(folder)
    missing = [r for r in roles if not (folder / r / "adapter_config.json").is_file()]
    if missing:
        raise ModelError(
            f"No adapter for role(s) {missing} in {folder} (expected {folder}/<role>/adapter_config.json). "
            "Save them with save_roles(), or pass the folder of a finished iteration."
        )
    for role in roles:
        check_adapter(folder / role)
    net = loaded.model
    for role in roles:
        if isinstance(net, PeftModel):
            if role in net.peft_config:
                _delete_adapter(net, role)
            net.load_adapter(str(folder / role), adapter_name=role, is_trainable=trainable)
        else:
            with _peft_reads_deprecated_property():
                net = PeftModel.from_pretrained(net, str(folder / role), adapter_name=role, is_trainable=trainable)
    loaded.model = net
    return loaded


def _delete_adapter(net, name: str) -> None:
    """Delete an adapter; when it is the active one, first make the next one active (what PEFT would
    do itself, with a warning that the replacement is not news)."""
    others = [n for n in net.peft_config if n != name]
    if name in net.active_adapters and others:
        net.set_adapter(others[0])
    net.delete_adapter(name)


def save_roles(loaded: LoadedModel, folder: str | os.PathLike, roles=ROLES) -> Path:
    """Save each role as a PEFT adapter folder `folder/<role>/` (loadable by PeftModel and vLLM)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    loaded.model.save_pretrained(str(folder), selected_adapters=list(roles))
    return folder


@contextlib.contextmanager
def use_role(model, role: str | None):
    """Run a block with one role's adapter active, or the plain base for role None/'base'."""
    from peft import PeftModel

    is_peft = isinstance(model, PeftModel)
    if role in (None, BASE):
        if is_peft:
            with model.disable_adapter():
                yield model
        else:
            yield model
        return
    if not is_peft or role not in model.peft_config:
        known = sorted(model.peft_config) if is_peft else []
        raise ModelError(f"Unknown role '{role}': this model has adapters {known}. Call add_roles() or load_roles().")
    previous = model.active_adapter
    model.set_adapter(role)
    try:
        yield model
    finally:
        model.set_adapter(previous)


def is_4bit(model) -> bool:
    """True when the model's linear layers are bitsandbytes 4-bit layers."""
    import bitsandbytes as bnb

    return any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
