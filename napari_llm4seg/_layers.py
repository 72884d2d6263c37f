"""napari layers <-> arrays: input checks, the current slice, output Labels geometry, class names and colours."""
from __future__ import annotations

import copy
import hashlib
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

#: Colours (RGB, 0-1) of classes 1, 2, ...: distinct hues that stay visible over gray images.
PALETTE: tuple[tuple[float, float, float], ...] = (
    (0.902, 0.098, 0.294),  # red
    (0.235, 0.706, 0.294),  # green
    (0.263, 0.388, 0.847),  # blue
    (1.000, 0.882, 0.098),  # yellow
    (0.961, 0.510, 0.192),  # orange
    (0.569, 0.118, 0.706),  # purple
    (0.275, 0.941, 0.941),  # cyan
    (0.941, 0.196, 0.902),  # magenta
)
#: Colour of label values without a class (e.g. painted by hand with a new value).
UNKNOWN_COLOR = (1.0, 1.0, 1.0, 1.0)
META_KEY = "llm4seg"


def unwrap(obj: Any) -> Any:
    """The napari object behind a plugin proxy (napari hands plugins a ``PublicOnlyProxy`` of the viewer)."""
    return getattr(obj, "__wrapped__", obj)


def image_data(layer: Any) -> Any:
    """The full-resolution data of an Image layer (level 0 of a multiscale pyramid)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def layer_layout(layer: Any) -> str:
    """"2d", "2d-rgb", "3d" or "3d-rgb": what is segmented of an Image layer (per time point / channel for
    4D+ layers, see :func:`lead_ndim`); ValueError naming the problem and the fix."""
    from napari.layers import Image

    layer = unwrap(layer)
    kind = type(layer).__name__
    if not isinstance(layer, Image):
        raise ValueError(
            f"layer {layer.name!r} is a {kind} layer: LLM4Seg segments Image layers. "
            "Select an image (2D, RGB or a Z×H×W volume) in the layer list or the Image box as input."
        )
    shape = tuple(image_data(layer).shape)
    rgb = bool(getattr(layer, "rgb", False))
    spatial = len(shape) - rgb
    if spatial < 2:
        raise ValueError(
            f"layer {layer.name!r} has shape {shape}, which looks like a 1D signal: LLM4Seg takes a 2D image, "
            "an RGB image, a Z×H×W volume or a stack of them. Add the data as a 2D image."
        )
    return ("2d" if spatial == 2 else "3d") + ("-rgb" if rgb else "")


def lead_ndim(layer: Any) -> int:
    """Axes before the segmented volume (time points, channels) of a 4D+ Image layer; 0 otherwise."""
    return max(0, len(spatial_shape(layer)) - 3)


def lead_index(layer: Any, viewer: Any) -> tuple[int, ...]:
    """Position of the viewer's sliders on the layer's time / channel axes (empty when it has none).

    ValueError when the canvas displays one of those axes (no single time point / channel is shown).
    """
    n = lead_ndim(layer)
    if n == 0:
        return ()
    offset = viewer.dims.ndim - layer.ndim
    on_canvas = sorted(a - offset for a in viewer.dims.displayed if 0 <= a - offset < n)
    if on_canvas:
        raise ValueError(
            f"layer {layer.name!r} has shape {tuple(image_data(layer).shape)} and the canvas displays its axis "
            f"{on_canvas[0]} (time / channel), so no single time point or channel is shown. Display its last "
            "axes (napari's 'Transpose' / 'Roll' buttons or the default axis order) and segment again."
        )
    point = layer.world_to_data(viewer.dims.point)
    shape = spatial_shape(layer)
    return tuple(int(np.clip(round(float(point[i])), 0, shape[i] - 1)) for i in range(n))


def describe_lead(layer: Any, lead: tuple[int, ...], viewer: Any = None) -> str:
    """"t = 3" (axis names of the layer or the viewer when set, else "axis 0 = 3") for a time / channel index."""
    def named(labels: Any, i: int) -> str:  # napari's default names are axis numbers ('0' or '-4')
        label = str(labels[i]) if 0 <= i < len(labels) else ""
        return "" if label in (str(i), str(i - len(labels))) else label

    own = tuple(getattr(layer, "axis_labels", None) or ())
    world = tuple(getattr(viewer.dims, "axis_labels", None) or ()) if viewer is not None else ()
    parts = [f"{named(own, i) or named(world, i + len(world) - layer.ndim) or f'axis {i}'} = {value}"
             for i, value in enumerate(lead)]
    return ", ".join(parts)


def spatial_shape(layer: Any) -> tuple[int, ...]:
    """Shape of the labels for ``layer``: the data shape without an RGB axis."""
    shape = tuple(int(s) for s in image_data(layer).shape)
    return shape[:-1] if getattr(layer, "rgb", False) else shape


def current_z(layer: Any, viewer: Any) -> int:
    """Index along the layer's z axis (the first after any time / channel axes) of the slice shown."""
    axis = lead_ndim(layer)
    z = float(layer.world_to_data(viewer.dims.point)[axis])
    return int(np.clip(round(z), 0, spatial_shape(layer)[axis] - 1))


def class_colormap(n_classes: int) -> dict[int | None, tuple[float, ...]]:
    """Label colours: background transparent, a palette colour per class, white for unknown values."""
    colors: dict[int | None, tuple[float, ...]] = {None: UNKNOWN_COLOR, 0: (0.0, 0.0, 0.0, 0.0)}
    for value in range(1, max(n_classes, 2)):
        colors[value] = (*PALETTE[(value - 1) % len(PALETTE)], 1.0)
    return colors


def class_features(classes: list[str]) -> dict[str, np.ndarray]:
    """Features table: one row per label value with its class name (shown on hover in napari)."""
    return {"index": np.arange(len(classes)), "class": np.asarray(classes, dtype=object)}


def output_name(source: Any) -> str:
    return f"{source.name} labels"


def labels_kwargs(source: Any, classes: list[str], info: dict[str, Any]) -> dict[str, Any]:
    """``add_labels`` keywords: the source's geometry (scale/translate/rotate/shear/affine, units, axis
    labels), its metadata (e.g. the file affine kept by the reader) plus ``info`` under ``llm4seg``."""
    ndim = len(spatial_shape(source))
    metadata = copy.deepcopy(dict(getattr(source, "metadata", {}) or {}))
    meta = dict(metadata.get(META_KEY) or {})
    meta["segmentation"] = info
    metadata[META_KEY] = meta
    kwargs: dict[str, Any] = {
        "name": output_name(source),
        "scale": np.asarray(source.scale)[-ndim:],
        "translate": np.asarray(source.translate)[-ndim:],
        "rotate": np.asarray(source.rotate)[-ndim:, -ndim:],
        "shear": np.asarray(source.shear),
        "affine": np.asarray(source.affine.affine_matrix),
        "metadata": metadata,
        "features": class_features(classes),
        "colormap": class_colormap(len(classes)),
        "opacity": 0.6,
    }
    for attr in ("units", "axis_labels"):
        value = getattr(source, attr, None)
        if value is not None:
            kwargs[attr] = tuple(value)[-ndim:]
    return kwargs


def set_classes(layer: Any, classes: list[str], info: dict[str, Any]) -> None:
    """Update class names, colours and our metadata of an output layer we created."""
    layer.features = class_features(classes)
    layer.colormap = class_colormap(len(classes))
    set_info(layer, info)


def set_info(layer: Any, info: dict[str, Any]) -> None:
    """Record how the output was made in ``metadata["llm4seg"]["segmentation"]``."""
    meta = dict(layer.metadata.get(META_KEY) or {})
    meta["segmentation"] = info
    layer.metadata = {**layer.metadata, META_KEY: meta}


def flat_slices(data: Any) -> np.ndarray:
    """``data`` as a stack of 2D slices (N, H, W): all leading axes flattened (a view when contiguous)."""
    data = np.asarray(data)
    return data.reshape(-1, *data.shape[-2:])


def slice_digests(data: Any, indices: Any = None) -> list[bytes]:
    """A digest per 2D slice of :func:`flat_slices` (one for a 2D image; only ``indices`` if given)."""
    flat = flat_slices(data)
    picked = range(len(flat)) if indices is None else indices
    return [hashlib.blake2b(np.ascontiguousarray(flat[i]).tobytes(), digest_size=16).digest() for i in picked]


def z_slices(shape: tuple[int, ...], z_range: tuple[int, int] | None) -> list[int]:
    """Slice indices covered by a run: all of a 2D image (index 0), or ``z_range`` of a volume."""
    if len(shape) == 2:
        return [0]
    z0, z1 = z_range if z_range is not None else (0, shape[0])
    return list(range(max(0, z0), min(shape[0], z1)))


_WRITING: set[int] = set()  # ids of the layers this plugin is writing into right now


@contextmanager
def plugin_writing(layer: Any) -> Iterator[None]:
    """Mark writes into ``layer`` as the plugin's own, so its paint events are not taken for user edits."""
    _WRITING.add(id(layer))
    try:
        yield
    finally:
        _WRITING.discard(id(layer))


def is_plugin_writing(layer: Any) -> bool:
    return id(layer) in _WRITING


def mark_edited(layer: Any) -> None:
    """Record in ``metadata["llm4seg"]["edited"]`` that the user painted into ``layer``."""
    meta = dict((layer.metadata or {}).get(META_KEY) or {})
    if not meta.get("edited"):
        meta["edited"] = True
        layer.metadata = {**(layer.metadata or {}), META_KEY: meta}


def is_untouched_output(layer: Any) -> bool:
    """A Labels layer this plugin's Segment wrote and the user has not painted into since."""
    meta = (getattr(layer, "metadata", None) or {}).get(META_KEY) or {}
    return "segmentation" in meta and not meta.get("edited", False)
