"""The Qt-free half of Correct with clicks: the worker jobs (``refine`` of one slice, propagation through a
volume) and writing masks into a Labels layer as one undo step."""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Any, Generator

import numpy as np

from llm4seg.events import CancelToken
from llm4seg.interactive import Click, RefineInput, iter_propagate, prepare, refine
from llm4seg.jobs import pick_device
from llm4seg.interactive.refine import model_prep
from llm4seg.preprocess import intensity_range

from ._layers import slice_digests

LABEL = 1  # the label value of the one object clicks correct


@dataclass
class Refined:
    """A refined mask and what to keep for the next click on the same slice."""

    mask: np.ndarray
    prepared: RefineInput
    intensity: tuple[float, float] | None  # of the whole image / volume (None: not known here)
    ms: float


def refine_job(image: Any, model: Any, clicks: list[Click], previous: np.ndarray | None, *, z: int | None,
               window: tuple[float, float] | None, device: str, prepared: RefineInput | None = None,
               intensity: tuple[float, float] | None = None) -> Refined:
    """The mask of the clicked image / slice after ``clicks`` (timed from here, model input included)."""
    dev, _ = pick_device(device)
    model.to(dev)
    start = time.perf_counter()
    if prepared is None:
        if intensity is None:
            intensity = intensity_range(np.asarray(image), model_prep(model), window)
        prepared = prepare(image, model, z=z, intensity=intensity)
    mask = refine(image, model, clicks, previous=previous, prepared=prepared, z=z)
    return Refined(mask, prepared, intensity, 1000 * (time.perf_counter() - start))


def propagate_job(volume: Any, model: Any, z: int, mask: np.ndarray, *, window: tuple[float, float] | None,
                  protected: set[int], cancel: CancelToken, device: str) -> Generator[Any, None, Any]:
    """``iter_propagate`` on ``device``: yields its events, returns {slice: mask} (None when cancelled)."""
    dev, _ = pick_device(device)
    model.to(dev)
    return (yield from iter_propagate(np.asarray(volume), model, z, mask, window=window, protected=protected,
                                      cancel=cancel))


# --- writing ---------------------------------------------------------------------------------------------
def merged(current: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``current`` labels with the object (``LABEL``) replaced by ``mask``; other label values stay."""
    out = np.array(current, copy=True)
    out[(current == LABEL) & (np.asarray(mask) == 0)] = 0
    out[np.asarray(mask) > 0] = LABEL
    return out


def write_masks(layer: Any, masks: dict[int | None, np.ndarray]) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Write ``masks`` ({slice: mask}; None: the 2D image) into ``layer`` as one undo step; returns the changed
    indices and their values before."""
    parts: list[tuple[np.ndarray, ...]] = []
    values: list[np.ndarray] = []
    for z, mask in masks.items():
        current = np.asarray(layer.data if z is None else layer.data[z])
        new = merged(current, mask)
        ys, xs = np.nonzero(new != current)
        parts.append((ys, xs) if z is None else (np.full(ys.shape, z, np.intp), ys, xs))
        values.append(new[ys, xs])
    if not parts:
        return (), np.zeros(0, layer.data.dtype)
    indices = tuple(np.concatenate(axis) for axis in zip(*parts))
    before = np.asarray(layer.data[indices]).copy()
    if before.size:
        with layer.block_history():  # one step of napari's undo history; its paint event fires on leaving
            layer.data_setitem(indices, np.concatenate(values).astype(layer.data.dtype, copy=False))
    return indices, before


def points_geometry(source: Any, ndim: int) -> dict[str, np.ndarray]:
    """The transforms of an image layer, for a layer of its ``ndim`` spatial axes that shares its pixel grid."""
    return {"scale": np.asarray(source.scale)[-ndim:], "translate": np.asarray(source.translate)[-ndim:],
            "rotate": np.asarray(source.rotate)[-ndim:, -ndim:], "affine": np.asarray(source.affine.affine_matrix)}


def digest(layer: Any, z: int | None) -> bytes:
    """The digest of slice ``z`` (None: the 2D labels) of a Labels layer."""
    return slice_digests(layer.data, [0 if z is None else z])[0]


@dataclass
class Step:
    """One click: where, what it changed (to undo it) and the slice's digest right after it."""

    click: Click
    z: int | None
    indices: tuple[np.ndarray, ...]
    before: np.ndarray
    after: bytes
    layer: weakref.ref




def restore(layer: Any, step: Step) -> None:
    """Put back the labels ``step`` changed, as one undo step."""
    if step.before.size:
        with layer.block_history():
            layer.data_setitem(step.indices, step.before)


@dataclass
class Job:
    """What a running click or propagation needs when it ends."""

    source: weakref.ref
    layer: weakref.ref
    z: int | None
    start: bytes = b""  # the slice's digest when the click was sent
    click: Click | None = None
    key: tuple = ()
    cancel: CancelToken | None = None
