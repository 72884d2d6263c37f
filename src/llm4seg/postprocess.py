"""Clean-up of label maps: drop small objects, fill holes, keep the largest connected component per class.

Works on 2D label images (H, W) and volumes (Z, H, W), either slice by slice or in 3D. Labels keep their
dtype and class values; no pixel ever changes from one foreground class to another (hole filling only
claims background pixels). Connected components use full connectivity (8 in 2D, 26 in 3D).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label as label_components
from skimage.morphology import remove_small_objects

__all__ = ["PostprocessOptions", "postprocess", "MODES"]

MODES = ("3d", "slice")


@dataclass(frozen=True)
class PostprocessOptions:
    """What to clean: ``min_size`` in pixels (voxels in 3D mode; 0 = off); ``mode`` "3d" or "slice"."""

    largest: bool = False
    fill_holes: bool = False
    min_size: int = 0
    mode: str = "3d"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"post-processing mode must be one of {MODES}, got {self.mode!r}")
        if self.min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {self.min_size}")

    @property
    def active(self) -> bool:
        """True when any option changes labels."""
        return self.largest or self.fill_holes or self.min_size > 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """Short human-readable summary, e.g. "largest component, fill holes, remove < 50 px (3D)"."""
        parts = (["largest component"] if self.largest else []) + (["fill holes"] if self.fill_holes else [])
        parts += [f"remove < {self.min_size} px"] if self.min_size else []
        return f"{', '.join(parts)} ({'3D' if self.mode == '3d' else 'per slice'})" if parts else "none"


def _clean(labels: np.ndarray, opts: PostprocessOptions) -> np.ndarray:
    """Apply ``opts`` to one 2D image or one 3D block (on a copy). Components: scikit-image; holes: scipy."""
    out = labels.copy()
    full = labels.ndim  # full connectivity: 8 in 2D, 26 in 3D
    for value in np.unique(out):
        if value == 0:
            continue
        mask = out == value
        if opts.min_size > 1:
            kept = remove_small_objects(mask, max_size=opts.min_size - 1, connectivity=full)
            out[mask & ~kept] = 0
            mask = kept
        if opts.fill_holes and mask.any():
            holes = ndi.binary_fill_holes(mask) & ~mask & (out == 0)
            out[holes] = value
            mask |= holes
        if opts.largest and mask.any():
            comp = label_components(mask, connectivity=full)
            sizes = np.bincount(comp.ravel())
            sizes[0] = 0
            out[mask & (comp != int(np.argmax(sizes)))] = 0
    return out


def postprocess(labels: np.ndarray, options: PostprocessOptions | None = None, **kwargs: Any) -> np.ndarray:
    """Cleaned copy of ``labels`` ((H, W) or (Z, H, W) integers); options as a dataclass or keywords."""
    opts = options or PostprocessOptions(**kwargs)
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise ValueError(f"post-processing expects labels (H, W) or (Z, H, W), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != bool:
        raise ValueError(f"post-processing expects integer labels, got dtype {labels.dtype}")
    if not opts.active:
        return labels.copy()
    if labels.ndim == 3 and opts.mode == "slice":
        return np.stack([_clean(s, opts) for s in labels]) if len(labels) else labels.copy()
    return _clean(labels, opts)
