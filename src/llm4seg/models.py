"""Registry of shipped checkpoints: name → file → card.

``resolve(name_or_path)`` turns ``default``, a registered name (``busi-lesion``) or a file path into a model.
Shipped files live in ``llm4seg/weights/`` (package data) and are listed, with their sha256, in
``registry.json`` beside them.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_NAME = "default"
UNTRAINED_NOTE = (
    "UNTRAINED: no trained default checkpoint is installed, so 'default' is a randomly initialised CMUNeXt "
    "with the embedded frozen SmolLM2 layer. Its masks are meaningless until it is trained or fine-tuned."
)


@dataclass(frozen=True)
class RegistryEntry:
    """One shipped checkpoint."""

    name: str
    file: str
    sha256: str
    task: str = ""
    default: bool = False

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file


def list_models() -> list[RegistryEntry]:
    """The shipped checkpoints, as recorded in ``weights/registry.json``."""
    path = WEIGHTS_DIR / "registry.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    return [RegistryEntry(**entry) for entry in data.get("models", [])]


def find_entry(name: str) -> RegistryEntry | None:
    """The registry entry of a shipped name (``default`` included), or None."""
    if name == DEFAULT_NAME:
        return default_entry()
    return next((e for e in list_models() if e.name == name), None)


def default_entry() -> RegistryEntry | None:
    entries = list_models()
    return next((e for e in entries if e.default), entries[0] if entries else None)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve(name_or_path: str | Path) -> Path | None:
    """Path of a checkpoint given by name or path; ``None`` means the untrained default model."""
    text = str(name_or_path)
    entry = find_entry(text)
    if entry is not None:
        return _verified(entry)
    if text == DEFAULT_NAME:
        return None
    path = Path(text).expanduser()
    if path.is_file():
        return path
    names = ", ".join([DEFAULT_NAME] + [e.name for e in list_models()])
    raise FileNotFoundError(f"no checkpoint {text!r}: give a .safetensors file or one of: {names}")


def _verified(entry: RegistryEntry) -> Path:
    if not entry.path.is_file():
        raise FileNotFoundError(f"shipped checkpoint {entry.name!r} is missing ({entry.path}): reinstall napari-llm4seg")
    if file_sha256(entry.path) != entry.sha256:
        raise ValueError(f"shipped checkpoint {entry.name!r} does not match its sha256: reinstall napari-llm4seg")
    return entry.path


def untrained_default(seed: int = 0) -> Any:
    """A randomly initialised model with the embedded LLM layer, labelled as untrained in its card."""
    from .checkpoint import ModelCard
    from .model import ModelConfig, build_model
    from .preprocess import Preprocessing

    model = build_model(ModelConfig(), seed=seed)
    model.card = ModelCard(
        name="untrained-default",
        description=UNTRAINED_NOTE,
        model=model.config.to_dict(),
        classes=["background", "lesion"],
        preprocessing=Preprocessing(channels=1).to_dict(),
        training={"status": "untrained"},
    )
    return model


def load_model(name_or_path: str | Path = DEFAULT_NAME, device: str | torch.device = "auto") -> Any:
    """Load a registered or file checkpoint (or the untrained default) onto ``device``."""
    from .checkpoint import load_checkpoint
    from .device import resolve_device

    path = resolve(name_or_path)
    if path is None:
        return untrained_default().to(resolve_device(device)).eval()
    return load_checkpoint(path, device=device)


def modality(card: Any) -> str:
    """What a card's model takes as input, in words: 'CT (HU, window L/W)', 'RGB' or '1-channel gray'."""
    prep = card.preprocess
    if prep.window is not None:
        return f"CT (Hounsfield units, window {prep.window[0]:g}/{prep.window[1]:g})"
    return "RGB" if prep.channels == 3 else "1-channel gray"


#: Shipped models for colour images, most specific first: (name, the images it was trained on).
COLOUR_MODELS = (("isic-lesion", "dermoscopy"), ("polyp", "colonoscopy"), ("generalist", "any other colour images"))
#: Shipped models for 8-bit gray images (ultrasound), by what they were trained on.
GRAY_MODELS = (("busi-lesion", "breast-ultrasound lesions"), ("thyroid", "the thyroid gland in ultrasound"))


#: Shipped starting points for fine-tuning on a modality no model was trained on: (name, for what).
FINETUNE_STARTS = (("gray-start", "new gray modality: MRI, CT"), ("generalist", "new colour modality"))
#: Shipped weights that are starting points only, not segmenters: fine-tuning holds nothing of their masks.
STARTING_POINTS = ("gray-start",)


def auto_start(model_name: str, pairs: Sequence[Any]) -> str | None:
    """The shipped starting point fine-tuning takes instead of ``model_name`` when the Fine-tune widget's start
    is *auto*, or None to start from ``model_name``: ``gray-start`` when a shipped ultrasound model (or the
    default) meets gray volumes (MRI, CT). Measured on 5 slices, three seeds: hippocampus MRI 0.754 from
    gray-start vs 0.562 from busi-lesion, CT liver 0.885 vs 0.869 (docs/finetuning.md). Fine-tuned models are
    always kept (a second round goes on from the first)."""
    entry = default_entry() if model_name == DEFAULT_NAME else None
    name = entry.name if entry is not None else model_name
    if name not in dict(GRAY_MODELS) or find_entry("gray-start") is None:
        return None
    return "gray-start" if any(np.ndim(p.labels) == 3 and not p.rgb for p in pairs) else None


def recommend(image: Any, rgb: bool = False) -> list[tuple[str, str]]:
    """Shipped models suited to ``image``, each with why, best first: CT in Hounsfield units → ``ct-liver``;
    colour → the RGB models by modality (``isic-lesion`` for dermoscopy, ``polyp`` for colonoscopy,
    ``generalist`` otherwise); 8-bit gray, or gray stored as colour → the ultrasound models (``busi-lesion``,
    ``thyroid``)."""
    from .preprocess import colour_is_gray, looks_like_ct

    names = {e.name for e in list_models()}
    arr = image if hasattr(image, "dtype") else None
    if arr is not None and looks_like_ct(arr) and "ct-liver" in names:
        return [("ct-liver", "the image looks like CT in Hounsfield units")]
    if rgb and arr is not None and colour_is_gray(arr):
        rgb = False  # equal red, green and blue: gray data
    if rgb:
        return [(name, f"RGB, for {what}") for name, what in COLOUR_MODELS if name in names]
    if arr is not None and arr.dtype == "uint8":
        return [(name, f"gray, for {what}") for name, what in GRAY_MODELS if name in names]
    return []


#: The suffix of a shipped model's click-conditioned variant (``busi-lesion`` → ``busi-lesion-clicks``).
CLICK_SUFFIX = "-clicks"
#: The shipped click model for any image when a model has no variant of its own.
CLICK_FALLBACK = "generalist-clicks"


def click_model_for(name_or_path: str | Path) -> str | None:
    """The model that takes clicks for ``name_or_path``: the model itself when it has prompt channels, else
    its shipped ``-clicks`` variant, else ``generalist-clicks``; None when none is installed (``refine``
    then uses the model's training-free fallback)."""
    from .checkpoint import read_card

    entry = find_entry(str(name_or_path))
    path = resolve(name_or_path)
    if path is not None and path.is_file():
        try:
            if (read_card(path).model or {}).get("prompts"):
                return str(name_or_path)
        except (OSError, ValueError):
            pass
    names = {e.name for e in list_models()}
    if entry is not None and entry.name + CLICK_SUFFIX in names:
        return entry.name + CLICK_SUFFIX
    return CLICK_FALLBACK if CLICK_FALLBACK in names else None
