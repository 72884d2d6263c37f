"""One-time conversion of a trusted, plain PyTorch state dict into an llm4seg safetensors checkpoint.

Uses ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects: only tensors and
plain containers load. Keys are matched to the network's names (module names follow the reference
CMUNeXt code), optionally after ``OLD=NEW`` prefix renames.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import ModelCard, save_checkpoint
from .filecheck import CheckpointError
from .model import ModelConfig, build_model
from .preprocess import Preprocessing


def _state_dict(obj: object) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict", "net"):
            if key in obj and isinstance(obj[key], dict):
                return _state_dict(obj[key])
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {str(k).removeprefix("module."): v for k, v in obj.items()}
    raise CheckpointError("the file does not hold a plain state dict (name → tensor)")


def convert_state_dict(
    src: str | Path,
    out: str | Path,
    *,
    llm: str | None = "smollm2-135m:15",
    in_channels: int = 3,
    num_classes: int = 1,
    prefix_map: list[str] | None = None,
    faithful: bool = False,
) -> Path:
    """Convert ``src`` (a trusted plain state dict) to a checkpoint at ``out``; ``faithful``: the reference
    architecture (:meth:`ModelConfig.faithful`), as weights trained with the paper's code need."""
    try:
        obj = torch.load(str(src), map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses code-carrying pickles
        raise CheckpointError(f"{Path(src).name} cannot be loaded as plain weights: {exc}") from None
    state = _state_dict(obj)
    for rule in prefix_map or []:
        old, _, new = rule.partition("=")
        state = {(new + k[len(old):] if k.startswith(old) else k): v for k, v in state.items()}
    kind = ModelConfig.faithful if faithful else ModelConfig
    config = kind(llm=None if llm in (None, "none") else llm, in_channels=in_channels, num_classes=num_classes)
    model = build_model(config)
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state and not k.startswith("booster.layer."))
    extra = sorted(k for k in state if k not in expected)
    if missing or extra:
        raise CheckpointError(
            f"state dict does not match the network: missing {missing[:5]}, unexpected {extra[:5]}; "
            "use --map OLD=NEW to rename key prefixes"
        )
    model.load_state_dict(state, strict=False)
    card = ModelCard(
        name=Path(out).stem, description=f"converted from {Path(src).name}",
        preprocessing=Preprocessing(channels=in_channels).to_dict(), training={"converted_from": Path(src).name},
    )
    return save_checkpoint(out, model, card)
