"""npe2 writers: Labels -> NIfTI (.nii.gz/.nii) or 2D/3D .png/.tif, with a ``labels.json`` of the class names
beside them when the layer knows them; Image -> NIfTI.

The geometry written is the source affine kept in the layer's ``metadata["llm4seg"]`` (or ``metadata["affine"]``)
by the reader or the segment widget, when the layer still has the source shape; otherwise an affine is built
from the layer's ``scale`` and ``translate``. napari's save dialog has already confirmed any overwrite, so the
writers replace existing files - atomically.

A file that cannot be written raises :class:`WriterError` (not ``ValueError``, which napari takes for "this
writer does not apply" and answers with a generic "no plugin could be found"), so the user sees the reason
and the fix in napari's notification.
"""
from __future__ import annotations

import functools
import warnings
from typing import Any, Callable

import numpy as np

from llm4seg.io import ImageData, write_image, write_labels


class WriterError(RuntimeError):
    """The layer cannot be written as asked; the message names the fix."""


def _explained(writer: Callable[..., list[str]]) -> Callable[..., list[str]]:
    @functools.wraps(writer)
    def wrapped(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
        try:
            return writer(path, data, meta)
        except (ValueError, TypeError) as exc:
            raise WriterError(f"LLM4Seg could not save {meta.get('name', 'the layer')!r} to {path}: {exc}") from None
    return wrapped


def with_extension(path: str, extensions: tuple[str, ...]) -> str:
    """``path``, or ``path`` plus the format's first extension when it ends in none of ``extensions`` (a name
    typed without one under the dialog's format filter)."""
    return path if path.lower().endswith(extensions) else path + extensions[0]


NIFTI = (".nii.gz", ".nii")
RASTER = (".tif", ".tiff", ".png")


def layer_classes(meta: dict[str, Any]) -> list[str] | None:
    """Class names of a Labels layer (background first): the Segment output's, or the reader's features."""
    info = (meta.get("metadata") or {}).get("llm4seg") or {}
    if info.get("classes"):
        return [str(c) for c in info["classes"]]
    features = meta.get("features")
    try:
        names = list(features["class"]) if features is not None and "class" in features else []
    except (TypeError, KeyError):
        names = []
    return [str(c) for c in names] or None


def _array(data: Any, meta: dict[str, Any]) -> np.ndarray:
    if meta.get("multiscale") and isinstance(data, (list, tuple)):
        data = data[0]
    return np.asarray(data)


def like_from_layer(shape: tuple[int, ...], meta: dict[str, Any], *, rgb: bool = False) -> ImageData:
    """Geometry of a layer (``layer._get_state()``-style ``meta``) as an :class:`ImageData` of ``shape``."""
    nsp = len(shape) - int(rgb)
    md = meta.get("metadata") or {}
    info = md.get("llm4seg") or {}
    affine = info.get("affine", md.get("affine"))
    src_meta = dict(info.get("meta") or {})
    spacing = info.get("spacing")
    src_shape = info.get("shape")
    if affine is not None and src_shape is not None and tuple(src_shape) != tuple(shape[:nsp]):
        warnings.warn(f"layer shape {tuple(shape[:nsp])} differs from its source image {tuple(src_shape)}; "
                      "writing an affine built from the layer's scale and translate instead", stacklevel=3)
        affine, src_meta = None, {}
    if affine is None or spacing is None or len(spacing) != nsp:
        spacing = [float(s) for s in (meta.get("scale") or [1.0] * nsp)][-nsp:]
        translate = [float(t) for t in (meta.get("translate") or [0.0] * nsp)][-nsp:]
        if affine is None:
            affine = np.eye(4)
            for i, (s, t) in enumerate(zip(reversed(spacing[-3:]), reversed(translate[-3:]))):
                affine[i, i], affine[i, 3] = s, t
    src_meta["rgb"] = rgb
    dummy = np.broadcast_to(np.zeros((), dtype=np.uint8), shape)  # shape only; never written
    return ImageData(dummy, tuple(abs(s) or 1.0 for s in spacing), np.asarray(affine, dtype=float), src_meta)


@_explained
def write_labels_nifti(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a Labels layer to .nii.gz/.nii (added when the name has no extension), restoring the source
    affine when known."""
    arr = _array(data, meta)
    path = with_extension(path, NIFTI)
    return [str(write_labels(path, arr, like_from_layer(arr.shape, meta), overwrite=True,
                             classes=layer_classes(meta)))]


@_explained
def write_labels_raster(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a Labels layer to .png (2D, values kept exactly) or .tif/.tiff (2D or 3D; .tif added when the name
    has no extension)."""
    arr = _array(data, meta)
    path = with_extension(path, RASTER)
    if path.lower().endswith(".png") and arr.ndim != 2:
        raise ValueError(f"PNG holds 2D labels only, this layer has shape {arr.shape}; save it as .tif or .nii.gz")
    return [str(write_labels(path, arr, like_from_layer(arr.shape, meta), overwrite=True,
                             classes=layer_classes(meta)))]


@_explained
def write_image_nifti(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a single-channel Image layer to .nii.gz/.nii (dtype kept; .nii.gz added when the name has no
    extension), restoring the source affine when known."""
    arr = _array(data, meta)
    path = with_extension(path, NIFTI)
    rgb = bool(meta.get("rgb", False))
    like = like_from_layer(arr.shape, meta, rgb=rgb)
    image = ImageData(arr, like.spacing, like.affine, like.meta)
    return [str(write_image(path, image, overwrite=True))]
