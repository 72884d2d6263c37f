"""The transformers configuration classes of the supported LLM layers, imported once and thread-safely."""
from __future__ import annotations

import threading
from typing import Any

from .sources import SUPPORTED_MODEL_TYPES

__all__ = ["config_class", "make_config", "normalise_config", "IMPORT_LOCK"]

# config keys that only concern classification heads (and do not survive a JSON round trip)
_DROP_KEYS = ("id2label", "label2id")

# transformers' lazy module is not thread-safe on first import: two GUI workers importing at once can fail
IMPORT_LOCK = threading.Lock()


def config_class(arch: str):
    """``LlamaConfig`` or ``Qwen2Config``."""
    with IMPORT_LOCK:
        from transformers import LlamaConfig, Qwen2Config

    if arch == "llama":
        return LlamaConfig
    if arch == "qwen2":
        return Qwen2Config
    supported = ", ".join(SUPPORTED_MODEL_TYPES)
    raise ValueError(f"unsupported LLM architecture {arch!r}: only {supported} layers can be used")


def make_config(arch: str, config: dict[str, Any]):
    cfg = config_class(arch)(**{k: v for k, v in config.items() if k not in _DROP_KEYS})
    cfg._attn_implementation = "sdpa"
    return cfg


def normalise_config(arch: str, raw: dict[str, Any]) -> dict[str, Any]:
    """A raw HF/GGUF config dict as the installed transformers writes it (``Config(**raw).to_dict()``)."""
    cfg = make_config(arch, raw).to_dict()
    for key in _DROP_KEYS:
        cfg.pop(key, None)
    cfg.pop("_attn_implementation_internal", None)
    return cfg
