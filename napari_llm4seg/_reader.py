"""npe2 reader: NIfTI files and DICOM series (a folder, or one file of the series) as napari layers.

Layers open with ``scale`` = voxel spacing in napari's (z, y, x) order; the source affine, spacing, shape and
path are kept in ``metadata["llm4seg"]`` (see :func:`layer_metadata`) so that the writers can restore them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ._layers import class_features

PLUGIN = "napari-llm4seg"

LayerData = tuple[Any, dict[str, Any], str]
PathOrPaths = str | os.PathLike | list[str | os.PathLike]

_LABEL_HINTS = ("label", "seg", "mask")


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def _accepts(path: Path) -> bool:
    from llm4seg.io import looks_like_dicom_folder

    if _is_nifti(path):
        return path.is_file()
    if path.is_dir():
        return looks_like_dicom_folder(path)
    return path.is_file() and path.suffix.lower() == ".dcm"


def prefer_this_reader() -> None:
    """Open NIfTI/DICOM with this plugin by default (no reader dialog, and ``viewer.open(path)`` works without
    ``plugin=``), unless the user already chose a reader for those files."""
    from napari.settings import get_settings

    mapping = dict(get_settings().plugins.extension2reader)
    missing = {p: PLUGIN for p in ("*.nii", "*.nii.gz", "*.dcm") if p not in mapping}
    if missing:
        get_settings().plugins.extension2reader = {**mapping, **missing}


def get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    """Return :func:`read_layers` for NIfTI files and DICOM folders/files, else None."""
    paths = path if isinstance(path, (list, tuple)) else [path]
    if not paths or not all(_accepts(Path(p)) for p in paths):
        return None
    return read_layers


class ReaderError(OSError):
    """A file the plugin's reader cannot open; the message (wrapped to fit napari's dialog) says why."""


def wrapped(text: str, width: int = 80) -> str:
    """``text`` broken into lines of at most ``width`` characters (napari's error dialog does not wrap)."""
    import textwrap

    return "\n".join(textwrap.fill(part, width, break_long_words=True, break_on_hyphens=False)
                     for part in str(text).splitlines() or [""])


def read_layers(path: PathOrPaths) -> list[LayerData]:
    """Read each path into one layer (Image, or Labels for label maps); a file that cannot be read raises
    :class:`ReaderError` with the reason wrapped to fit a dialog."""
    from llm4seg.io import read_image

    paths = path if isinstance(path, (list, tuple)) else [path]
    layers = []
    for p in paths:
        try:
            image = read_image(p)
        except (OSError, ValueError, EOFError) as exc:
            raise ReaderError(wrapped(f"LLM4Seg could not open {Path(p).name}: {exc}")) from None
        layers.append(layer_data(image, Path(p)))
    return layers


def _display_name(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii", ".dcm"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def looks_like_labels(array: np.ndarray, name: str) -> bool:
    """Integer data with a label-like name, or non-negative integers with few distinct values."""
    if array.dtype == bool:
        return True
    if not np.issubdtype(array.dtype, np.integer) or array.size == 0:
        return False
    if any(h in name.lower() for h in _LABEL_HINTS):
        return True
    step = max(1, array.size // 2_000_000)
    sample = array.reshape(-1)[::step]
    return bool(sample.min() >= 0 and sample.max() <= 255 and np.unique(sample).size <= 32)


def layer_metadata(img: Any, source: str | os.PathLike | None, **extra: Any) -> dict[str, Any]:
    """``{"llm4seg": {affine, spacing, shape, source, meta, ...}}``: what the writers need to restore geometry.

    ``affine`` maps voxel indices in file order (x, y, z) - the layer axes reversed - to world mm (RAS+).
    """
    info = {
        "affine": None if img.affine is None else np.asarray(img.affine).tolist(),
        "affine_axes": "xyz (layer axes reversed) -> world mm, RAS+",
        "spacing": list(img.spacing),
        "shape": list(img.spatial_shape),
        "source": None if source is None else str(source),
        "meta": dict(img.meta),
    }
    info.update(extra)
    return {"llm4seg": info}


def class_names_beside(source: Path) -> list[str]:
    """Class names of a label map from a ``labels.json`` next to it (``{"1": "liver", ...}``), index = value;
    empty when there is none or it cannot be read."""
    from llm4seg.train.sources import known_classes

    try:
        known = known_classes(Path(source).parent)
    except ValueError:
        return []
    if not known:
        return []
    return ["background"] + [known.get(k, f"label {k}") for k in range(1, max(known) + 1)]


def layer_data(img: Any, source: Path, *, layer_type: str | None = None, name: str | None = None,
               **extra_meta: Any) -> LayerData:
    """Turn an :class:`llm4seg.io.ImageData` into napari ``(data, kwargs, layer_type)``."""
    name = name or _display_name(source)
    arr = img.array
    if layer_type is None:
        layer_type = "labels" if not img.rgb and looks_like_labels(arr, name) else "image"
    kwargs: dict[str, Any] = {
        "name": name,
        "scale": list(img.spacing),
        "metadata": layer_metadata(img, source, **extra_meta),
    }
    if layer_type == "labels":
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        classes = class_names_beside(source)
        if classes:
            kwargs["features"] = class_features(classes)  # hovering a label shows its class
    else:
        kwargs["rgb"] = img.rgb
        if np.issubdtype(arr.dtype, np.signedinteger) and arr.size and arr.min() <= -500:
            from llm4seg.preprocess import WINDOWS

            level, width = WINDOWS["abdomen"]  # HU data shows in the abdomen window
            kwargs["contrast_limits"] = [level - width / 2, level + width / 2]
    return arr, kwargs, layer_type
