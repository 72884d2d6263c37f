"""Which slice (or image of a stack) to label next: the ones the model is least sure about.

:func:`slice_uncertainty` scores every slice by the mean entropy of the model's per-pixel class
probabilities, over the pixels the model is not sure about (or that it calls foreground), so a slice
with a small uncertain structure is not drowned by its confident background. :func:`suggest_slices`
ranks the slices not labelled yet and keeps them apart (``min_gap``), so the suggestions cover the
volume instead of piling up on neighbours. Uncertainty misses confident mistakes: :func:`beyond_labels`
lists the slices beyond the labelled ones (above the top one, below the bottom one) where the model still
draws, largest drawing first: where another organ is mistaken for the labelled one (the heart above the liver).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["Suggestion", "beyond_labels", "slice_uncertainty", "suggest_slices"]

EPS = 1e-6


@dataclass(frozen=True)
class Suggestion:
    """A slice index and its score: ``kind`` "uncertain", the mean entropy in bits (0 = certain); "beyond", the
    fraction of the slice the model draws as foreground beyond the labelled slices."""

    z: int
    score: float
    kind: str = "uncertain"


def _entropy(probs: np.ndarray, binary: bool) -> np.ndarray:
    p = np.clip(probs.astype(np.float32, copy=False), EPS, 1 - EPS)
    if binary:
        return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return -(p * np.log2(p)).sum(axis=1)


def slice_uncertainty(probs: np.ndarray, *, threshold: float = 0.1) -> np.ndarray:
    """Per-slice uncertainty of a segmentation's probabilities.

    ``probs``: (Z, H, W) foreground probability (binary model) or (Z, K, H, W) class probabilities.
    The score of a slice is the mean pixel entropy over its *region of interest*: pixels whose entropy is
    above ``threshold`` bits or that are predicted foreground. A slice with no such pixel scores 0.
    """
    ent, roi = _region(probs, threshold)
    total = (ent * roi).reshape(len(ent), -1).sum(axis=1)
    count = roi.reshape(len(ent), -1).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def _region(probs: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel entropy and the region of interest (uncertain or foreground pixels) of each slice."""
    probs = np.asarray(probs)
    binary = probs.ndim == 3
    if probs.ndim not in (3, 4):
        raise ValueError(f"expected probabilities (Z, H, W) or (Z, K, H, W), got shape {probs.shape}")
    ent = _entropy(probs, binary)
    fg = probs > 0.5 if binary else probs.argmax(axis=1) > 0
    return ent, (ent > threshold) | fg


def suggest_slices(probs: np.ndarray, labelled: Sequence[int] = (), k: int = 5, *, min_gap: int = 2,
                   threshold: float = 0.1, min_area: float = 0.25) -> list[Suggestion]:
    """Up to ``k`` slices to label next, most uncertain first.

    Labelled slices and slices within ``min_gap`` of a labelled or an already suggested slice are skipped;
    so are slices the model is certain about (score 0: nothing there, or a structure it already knows), and,
    with ``min_area`` > 0, slices whose region of interest (uncertain or foreground pixels) is smaller than that
    fraction of the largest slice's (stray blobs outside the structure, which give nothing to paint).
    """
    scores = slice_uncertainty(probs, threshold=threshold)
    if min_area > 0:
        area = _region(probs, threshold)[1].reshape(len(scores), -1).sum(axis=1)
        scores = np.where(area >= min_area * max(1, int(area.max())), scores, 0.0)
    return _ranked(scores, labelled, k, min_gap, "uncertain")


def beyond_labels(foreground: np.ndarray, labelled: Sequence[int], k: int = 2, *, min_gap: int = 2
                  ) -> list[Suggestion]:
    """Up to ``k`` slices outside the labelled range (before the first labelled slice or after the last) where
    ``foreground`` (Z, H, W: what the model draws) covers most of the slice, largest first, ``min_gap`` apart.

    A structure's own ends lie there too; so do other organs the model mistakes for it, which no uncertainty
    score ranks high (the model is sure). After 5 even liver CT slices it found the heart in 2 of 3 draws, and
    erasing it there gained +0.015 to +0.019 Dice; on the hippocampus (MRI) the result was mixed
    (docs/finetuning.md)."""
    fg = np.asarray(foreground).astype(bool)
    zs = [int(z) for z in labelled if 0 <= int(z) < len(fg)]
    if fg.ndim != 3 or not zs:
        return []
    frac = fg.reshape(len(fg), -1).mean(axis=1)
    inside = np.zeros(len(fg), dtype=bool)
    inside[min(zs):max(zs) + 1] = True
    return _ranked(np.where(inside, 0.0, frac), zs, k, min_gap, "beyond")


def _ranked(scores: np.ndarray, labelled: Sequence[int], k: int, min_gap: int, kind: str) -> list[Suggestion]:
    """The ``k`` best-scoring slices (score > 0), none within ``min_gap`` of a labelled or an earlier pick."""
    blocked = np.zeros(len(scores), dtype=bool)

    def block(z: int) -> None:
        blocked[max(0, z - min_gap):z + min_gap + 1] = True

    for z in labelled:
        if 0 <= int(z) < len(scores):
            block(int(z))
    out: list[Suggestion] = []
    for z in np.argsort(-scores, kind="stable"):
        if len(out) >= k or scores[z] <= 0:
            break
        if not blocked[z]:
            out.append(Suggestion(int(z), float(scores[z]), kind))
            block(int(z))
    return out
