"""A run's generation on an OpenAI-compatible server (`serve.backend: openai`).

The server serves the base model; every trained adapter a step needs (iteration k's Generator and
Extender, a held-out model) is made available to it under a name that carries the run and the
iteration, in one of three ways (`serve.adapters`):

- "load": vLLM's runtime LoRA API (`POST /v1/load_lora_adapter`, `/v1/unload_lora_adapter`; the server
  runs with `--enable-lora` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`). The server must be able to read
  the adapter folders at the paths this machine sees.
- "path": a folder holding the base model's files (linked, not copied) and the adapter, named by its
  path: a server that loads any local model a request names (`transformers serve`) loads the base
  with the adapter on top.
- "manual": you load them; the run stops with `AdaptersNeeded`, which lists each name and folder, and
  goes on when run again once the server lists them at /v1/models.

A server without the runtime API in "load" mode is treated like "manual".
"""

from __future__ import annotations

import os
from pathlib import Path

from .models import resolve_model
from .served import OpenAIBackend

BASE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "chat_template.jinja", "tokenizer.model", "vocab.json", "merges.txt")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class AdaptersNeeded(RuntimeError):
    """The server does not have adapters the next step needs, and cannot be asked to load them."""


def served_name(run_name: str, name: str) -> str:
    """The name of a run's adapter on the server, e.g. 'demo-generator-iter2'."""
    return f"{run_name}-{name}"


def base_on_server(config) -> str:
    """The base model's name on the server: `serve.model`, else the model's hub id or local folder."""
    return config.serve.model or resolve_model(config.model)


def backend(config, progress: bool = True) -> OpenAIBackend:
    """The OpenAI-compatible backend of a run's `serve` settings, rendering prompts with the model's tokenizer."""
    s = config.serve
    return OpenAIBackend(s.base_url, base_on_server(config), concurrency=s.concurrency, timeout=s.timeout,
                         retries=s.retries, tokenizer=resolve_model(config.model), progress=progress,
                         extra_body=s.extra_body, context=s.context)


def _local_folder(model: str) -> Path:
    """A local folder of the base model's files: the folder itself, or the hub cache's snapshot."""
    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model, local_files_only=True))


def servable_folder(base: str, adapter: Path, out: Path) -> Path:
    """A folder that loads as the base model with `adapter` on top: the base's files linked, the adapter's
    files linked next to them (transformers then loads the base from the folder and applies the adapter)."""
    out.mkdir(parents=True, exist_ok=True)
    sources = {p.name: p for p in _local_folder(base).iterdir()
               if p.name in BASE_FILES or p.name.endswith(".safetensors") or p.name.endswith(".index.json")}
    sources.update({n: Path(adapter) / n for n in ADAPTER_FILES})
    for name, source in sources.items():
        link = out / name
        if link.is_symlink() or link.exists():
            if link.resolve() == source.resolve():
                continue
            link.unlink()
        os.symlink(source.resolve(), link)
    return out


class ServedAdapters:
    """Makes a run's adapter folders available to its server by name (see the module's docstring)."""

    def __init__(self, backend: OpenAIBackend, config, folder: Path):
        self.backend, self.config, self.folder = backend, config, Path(folder)
        self.mode = config.serve.adapters
        self.loaded: set[str] = set()  # loaded through the runtime API by this process

    def provide(self, adapters: dict[str, Path]) -> dict[str, str]:
        """{name: adapter folder} -> {name: the served model name}; raises AdaptersNeeded for what is missing."""
        if self.mode == "path":
            return {name: str(servable_folder(base_on_server(self.config), folder,
                                              self.folder / "served" / name).resolve())
                    for name, folder in adapters.items()}
        names = {name: served_name(self.config.name, name) for name in adapters}
        listed = set(self.backend.models())
        missing = {name: folder for name, folder in adapters.items() if names[name] not in listed}
        if self.mode == "load":
            for name, folder in list(missing.items()):
                if not self.backend.load_adapter(names[name], Path(folder).resolve()):
                    break  # no runtime LoRA API on this server
                self.loaded.add(names[name])
                del missing[name]
        if missing:
            raise AdaptersNeeded(self._how_to(missing, names))
        return names

    def release(self, names) -> None:
        """Unload adapters this process loaded through the runtime API (others stay as they are)."""
        for name in names:
            if name in self.loaded:
                self.backend.unload_adapter(name)
                self.loaded.discard(name)

    def _how_to(self, missing: dict[str, Path], names: dict[str, str]) -> str:
        pairs = "; ".join(f"{names[n]} = {Path(f).resolve()}" for n, f in missing.items())
        modules = " ".join(f"{names[n]}={Path(f).resolve()}" for n, f in missing.items())
        why = ("it has no runtime LoRA API (start vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)"
               if self.mode == "load" else "serve.adapters is 'manual'")
        return (f"The server at {self.backend.base_url} does not list the adapters the next step needs, and "
                f"{why}. Load each folder under its name: {pairs} (vLLM: vllm serve {base_on_server(self.config)} "
                f"--enable-lora --max-lora-rank {self.config.lora.r} --lora-modules {modules}), then run the same "
                "command again: the run resumes where it stopped.")
