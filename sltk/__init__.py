# ruff: noqa: E402
"""sltk: the Self-Lengthen toolkit.

Teach an instruct model to write long texts from its own knowledge: a Generator drafts, an
Extender lengthens, and the longer texts train both roles again, iteration after iteration.
"""

import logging

# bitsandbytes warns at import that an optional CPU kernel package is missing; sltk does not use it.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

from .backends import HFBackend
from .chat import BASE, ChatRequest, Completion, ModelError, PromptError, Sampling
from .config import Config, preset
from .embedded import EmbeddedModelError
from .models import (
    ROLES,
    LoadedModel,
    add_roles,
    load_base,
    load_roles,
    lora_config,
    save_roles,
    use_role,
)
from .pipeline import Pipeline
from .served import OpenAIBackend, ServerError

__version__ = "0.1.0"

__all__ = [
    "BASE",
    "ROLES",
    "ChatRequest",
    "Completion",
    "Config",
    "EmbeddedModelError",
    "HFBackend",
    "LoadedModel",
    "ModelError",
    "OpenAIBackend",
    "Pipeline",
    "PromptError",
    "Sampling",
    "ServerError",
    "add_roles",
    "load_base",
    "load_roles",
    "lora_config",
    "preset",
    "save_roles",
    "use_role",
]
