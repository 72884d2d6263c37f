"""Carry a corrected slice's mask through a volume, slice by slice, up and down, until the object ends.

Each next slice is refined with the mask of the slice before it as the previous mask (no clicks). A model
without prompt channels keeps, of its automatic mask on the next slice, the parts that touch the previous
slice's mask. Propagation stops in a direction when the mask vanishes (under ``VANISH`` of the corrected
slice's area), jumps (IoU with the previous slice's mask under ``JUMP``), or reaches a protected slice (one
the user painted).
"""
from __future__ import annotations

from typing import Any, Container, Generator

import numpy as np
from scipy import ndimage

from ..events import Cancelled, Progress, is_cancelled
from ..preprocess import intensity_range
from .clicker import iou
from .refine import model_prep, prepare, refine, takes_prompts

__all__ = ["iter_propagate", "VANISH", "JUMP"]

VANISH = 0.05
JUMP = 0.25


def _carry(auto: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """The components of ``auto`` that overlap ``previous`` (grown by 2 pixels)."""
    labels, n = ndimage.label(auto > 0)
    if n == 0:
        return np.zeros_like(auto, dtype=np.uint8)
    touch = np.unique(labels[ndimage.binary_dilation(previous > 0, iterations=2) & (labels > 0)])
    return np.isin(labels, touch[touch > 0]).astype(np.uint8)


def iter_propagate(volume: np.ndarray, model: Any, z: int, mask: np.ndarray, *, window: tuple[float, float] | None = None,
                   protected: Container[int] = (), cancel: Any = None, max_slices: int | None = None,
                   ) -> Generator[Progress | Cancelled, None, dict[int, np.ndarray] | None]:
    """Propagate ``mask`` (the corrected slice ``z`` of ``volume``) up and down; yields ``Progress`` per slice
    and returns {slice: mask} for the slices it filled (not ``z`` itself), or None when cancelled."""
    volume = np.asarray(volume)
    lo_hi = intensity_range(volume, model_prep(model), window)
    start_area = max(1, int(np.count_nonzero(mask)))
    n = volume.shape[0]
    budget = n if max_slices is None else max_slices
    out: dict[int, np.ndarray] = {}
    done = 0
    for step in (1, -1):
        previous, zz = (np.asarray(mask) > 0).astype(np.uint8), z + step
        while 0 <= zz < n and zz not in protected and abs(zz - z) <= budget:
            if is_cancelled(cancel):
                yield Cancelled()
                return None
            if takes_prompts(model):
                new = refine(volume, model, [], previous=previous, z=zz, intensity=lo_hi)
            else:
                auto = refine(volume, model, [], prepared=prepare(volume, model, z=zz, intensity=lo_hi))
                new = _carry(auto, previous)
            if np.count_nonzero(new) < VANISH * start_area or iou(new, previous) < JUMP:
                break
            out[zz], previous = new, new
            zz += step
            done += 1
            yield Progress(done, n - 1, f"slice {zz - step}", phase="propagating")
    return out
