"""Checkpoints: one ``.safetensors`` file holding the tensors and a JSON model card.

The frozen LLM layer is embedded by default, so a checkpoint runs anywhere with no LLM installed;
``embed_llm=False`` stores only a reference (descriptor + sha256) that is re-resolved and verified on
load. Pickles are never unpickled (see ``llm4seg.filecheck``).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .device import resolve_device
from .filecheck import CheckpointError, read_safetensors_header
from .model import LLM4Seg, ModelConfig, build_model
from .preprocess import Preprocessing

FORMAT_VERSION = 1
CARD_KEY = "llm4seg.card"
LAYER_PREFIX = "booster.layer."
LLM_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

__all__ = ["CheckpointError", "ModelCard", "save_checkpoint", "load_checkpoint", "read_card", "default_card"]


@dataclass
class ModelCard:
    """What a checkpoint is: architecture, frozen layer, classes, preprocessing, provenance, metrics."""

    name: str = "llm4seg-model"
    description: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    llm: dict[str, Any] = field(default_factory=dict)
    classes: list[str] = field(default_factory=lambda: ["background", "foreground"])
    preprocessing: dict[str, Any] = field(default_factory=lambda: Preprocessing().to_dict())
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "checkpoint") -> "ModelCard":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{source}: the model card is not valid JSON ({exc})") from None
        version = d.get("format_version")
        if not isinstance(version, int):
            raise CheckpointError(f"{source}: the model card has no format_version; not an llm4seg checkpoint")
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"{source} has format version {version}, newer than this llm4seg understands ({FORMAT_VERSION}): "
                "upgrade napari-llm4seg"
            )
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.model)

    @property
    def preprocess(self) -> Preprocessing:
        return Preprocessing.from_dict(self.preprocessing)


def default_card(model: LLM4Seg, **overrides: Any) -> ModelCard:
    """A card for ``model`` with class names and preprocessing matching its config."""
    cfg = model.config
    classes = ["background"] + (["foreground"] if cfg.num_classes == 1 else [f"class {i}" for i in range(1, cfg.num_classes)])
    card = ModelCard(classes=classes, preprocessing=Preprocessing(channels=cfg.in_channels).to_dict())
    for key, value in overrides.items():
        setattr(card, key, value)
    return card


def save_checkpoint(
    path: str | Path,
    model: LLM4Seg,
    card: ModelCard | None = None,
    *,
    embed_llm: bool = True,
    llm_dtype: str = "float32",
) -> Path:
    """Write ``model`` + ``card`` atomically to one safetensors file; return its path."""
    from .llm import parse_descriptor, tensors_sha256

    path = Path(path)
    if llm_dtype not in LLM_DTYPES:
        raise ValueError(f"llm_dtype must be one of {sorted(LLM_DTYPES)}, got {llm_dtype!r}")
    card = card if card is not None else (model.card or default_card(model))
    card.model = model.config.to_dict()
    card.format_version = FORMAT_VERSION
    card.created = card.created or datetime.now(timezone.utc).isoformat(timespec="seconds")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if model.booster is not None:
        layer = model.frozen_layer_state()
        stored = {LAYER_PREFIX + k: v.detach().cpu().to(LLM_DTYPES[llm_dtype]).contiguous() for k, v in layer.items()}
        card.llm = {
            "descriptor": model.config.llm,
            "layer_index": parse_descriptor(model.config.llm).layer,
            "arch": model.config.llm_arch,
            "init": model.config.llm_init,
            "sha256": tensors_sha256(layer),
            "embedded": bool(embed_llm or model.config.llm_init != "pretrained"),
            "dtype": llm_dtype,
        }
        tensors = {k: v for k, v in tensors.items() if not k.startswith(LAYER_PREFIX)}
        if card.llm["embedded"]:
            tensors.update(stored)
            card.llm["embedded_sha256"] = tensors_sha256({k[len(LAYER_PREFIX):]: v for k, v in stored.items()})
    else:
        card.llm = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={CARD_KEY: card.to_json(), "format": "pt"})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # ordinary file permissions, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_card(path: str | Path) -> ModelCard:
    """The model card of a checkpoint, read from its header only (no tensors)."""
    header = read_safetensors_header(path)
    meta = header.get("__metadata__") or {}
    if CARD_KEY not in meta:
        raise CheckpointError(
            f"{Path(path).name} has no llm4seg model card in its metadata: it is a plain safetensors file, "
            "not an llm4seg checkpoint (convert it with `llm4seg convert`)"
        )
    return ModelCard.from_json(meta[CARD_KEY], source=Path(path).name)


def load_checkpoint(path: str | Path, device: str | torch.device = "auto") -> LLM4Seg:
    """Load a checkpoint onto ``device`` (auto: cuda > mps > cpu) in eval mode; ``model.card`` is set."""
    from .llm import load_layer_weights, tensors_sha256

    path = Path(path)
    card = read_card(path)
    try:
        config = card.model_config
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path.name}: the model card's architecture is invalid ({exc})") from None
    llm = card.llm or {}
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if config.uses_llm and not llm.get("embedded", True):
        weights = load_layer_weights(llm["descriptor"])
        found = tensors_sha256(weights.tensors)
        if found != llm.get("sha256"):
            raise CheckpointError(
                f"{path.name} was trained with {llm['descriptor']} whose frozen layer has sha256 "
                f"{str(llm.get('sha256'))[:12]}…, but the installed weights give {found[:12]}…: install the "
                "exact weights it was trained with, or use a checkpoint with the layer embedded"
            )
        tensors.update({LAYER_PREFIX + k: v for k, v in weights.tensors.items()})
    elif config.uses_llm and llm.get("embedded_sha256"):
        stored = {k[len(LAYER_PREFIX):]: v for k, v in tensors.items() if k.startswith(LAYER_PREFIX)}
        if tensors_sha256(stored) != llm["embedded_sha256"]:
            raise CheckpointError(
                f"{path.name}: the embedded frozen layer does not match its recorded sha256: the file was "
                "modified or corrupted; download or export it again"
            )
    model = build_model(config, load_llm=False)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [k for k in expected if k in tensors and tuple(tensors[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(names[:4])}{' …' if len(names) > 4 else ''}"
            for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if names
        )
        raise CheckpointError(f"{path.name}: tensors do not match the model card's architecture ({detail})")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=True)
    if config.uses_llm:
        model.booster.freeze_layer()
    model.card = card
    return model.to(resolve_device(device)).eval()
