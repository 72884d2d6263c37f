"""Which kind of image is this, and which shipped model fits it: the Segment tab's model hint.

    guess_modality(image, rgb=True)          # 'colonoscopy'
    model_hint(image, rgb=True, in_use="busi-lesion").text
    # 'Colonoscopy frame: polyp fits it (busi-lesion, in use, was trained on breast ultrasound).'

The rules read the pixels only (no file name, no metadata): CT is stored in Hounsfield units (air below
-500); a colour image whose channels agree is gray; colonoscopy frames carry the video's black border
(more than :data:`DARK_SHARE` of the pixels almost black) and strongly coloured mucosa, dermoscopy images
neither; a colour image of almost no chroma is gray data;
other gray volumes are taken as MR, 2D gray images as ultrasound. How often they are right on the shared
data sets: ``python -m benchmarks.modality`` (docs/models.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .preprocess import colour_is_gray, looks_like_ct

__all__ = ["MODALITIES", "MODALITY_MODELS", "DARK_SHARE", "guess_modality", "ModelHint", "model_hint"]

MODALITIES = ("dermoscopy", "colonoscopy", "ultrasound", "CT", "MR")
#: The shipped model for each modality (MR: the starting point to fine-tune from; no shipped model segments it)
MODALITY_MODELS = {"dermoscopy": "isic-lesion", "colonoscopy": "polyp", "ultrasound": "busi-lesion",
                   "CT": "ct-liver", "MR": "gray-start"}
#: Other shipped models that fit a modality as well (the thyroid model is ultrasound too).
ALSO_FITS = {"ultrasound": ("thyroid", "busi-lesion-clicks"), "dermoscopy": ("generalist",),
             "colonoscopy": ("generalist",)}
#: What each shipped model was trained on, in words.
TRAINED_ON = {"isic-lesion": "dermoscopy", "polyp": "colonoscopy", "busi-lesion": "breast ultrasound",
              "thyroid": "thyroid ultrasound", "ct-liver": "CT", "gray-start": "gray images (a starting point)",
              "generalist": "ultrasound, dermoscopy, colonoscopy and CT"}
DARK_SHARE = 0.05   # colonoscopy: share of almost black pixels (the frame's border) above this
CHROMA = 0.12       # colonoscopy: mean chroma (max - min channel, 0-1) of the lit pixels above this
GRAYISH = 0.033     # below this mean chroma a colour image is gray data (dermoscopy: from 0.037 up)
NOUNS = {"dermoscopy": "Dermoscopy image", "colonoscopy": "Colonoscopy frame", "ultrasound": "Ultrasound image",
         "CT": "CT volume", "MR": "MR volume"}


def _colour_features(image: np.ndarray, width: int = 64) -> tuple[float, float]:
    """(share of almost black pixels, mean chroma of the others) on block means ``width`` blocks wide: at 16,
    colour noise on gray data (as in some ultrasound exports) averages out and real colour stays; at 64, a
    video's black border is still black."""
    rgb = np.asarray(image)[..., :3]
    top = float(np.iinfo(rgb.dtype).max) if rgb.dtype.kind in "ui" else max(1.0, float(rgb.max()))
    step = max(1, max(rgb.shape[:2]) // width)
    h, w = (rgb.shape[0] // step) * step, (rgb.shape[1] // step) * step
    small = rgb[:h, :w].reshape(h // step, step, w // step, step, 3).mean(axis=(1, 3), dtype=np.float32) / top
    hi, lo = small.max(-1), small.min(-1)
    lit = hi >= 0.1
    return float((~lit).mean()), float((hi - lo)[lit].mean()) if lit.any() else 0.0


def guess_modality(image: Any, rgb: bool = False) -> str:
    """One of :data:`MODALITIES` for an image (2D, 2D colour with channels last, or a gray volume), or ``""``
    when the rules do not apply (e.g. float data that is no volume)."""
    arr = np.asarray(image)
    if arr.size == 0:
        return ""
    if looks_like_ct(arr):
        return "CT"
    if rgb and colour_is_gray(arr):
        arr, rgb = arr[..., 0], False
    if rgb:
        frame = arr if arr.ndim == 3 else arr[arr.shape[0] // 2]
        if _colour_features(frame, 16)[1] < GRAYISH:
            return "ultrasound"  # gray stored as colour, with colour noise or a few coloured marks
        dark, chroma = _colour_features(frame)
        return "colonoscopy" if dark > DARK_SHARE and chroma > CHROMA else "dermoscopy"
    if arr.ndim == 3:
        return "MR"
    return "ultrasound" if arr.ndim == 2 else ""


@dataclass(frozen=True)
class ModelHint:
    """The modality seen, the shipped model that fits it, whether the model in use fits, and the line to show."""

    modality: str
    model: str
    fits: bool
    text: str


def model_hint(image: Any, rgb: bool = False, in_use: str = "") -> ModelHint:
    """The Model section's hint for ``image`` with the model ``in_use`` (a shipped name, a fine-tuned card's
    name or a path)."""
    modality = guess_modality(image, rgb)
    if not modality:
        return ModelHint("", "", True, "")
    best = MODALITY_MODELS[modality]
    name = str(in_use)
    base = name.removesuffix("-finetuned")
    fits = base == best or base in ALSO_FITS.get(modality, ()) or (modality == "MR" and name.endswith("-finetuned"))
    noun = NOUNS[modality]
    if modality == "MR":
        text = (f"{noun}: no shipped model segments MR; label ~5 slices and fine-tune from {best} (Fine-tune tab)."
                if not fits else f"{noun}: {name} fits it.")
    elif fits:
        text = f"{noun}: {name} fits it."
    else:
        trained = TRAINED_ON.get(base)
        why = f" ({name}, in use, was trained on {trained})" if trained else f" (in use: {name})" if name else ""
        text = f"{noun}: {best} fits it{why}."
    return ModelHint(modality, best, fits, text)
