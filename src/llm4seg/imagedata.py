"""The in-memory image of ``llm4seg.io``: an array in napari axis order with its spacing, affine and metadata."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ImageData", "SUPPORTED_FORMATS"]

SUPPORTED_FORMATS = ("PNG/JPEG/BMP (.png, .jpg, .jpeg, .bmp), TIFF (.tif, .tiff), NIfTI (.nii, .nii.gz) and DICOM "
                     "series (a folder of .dcm or extension-less DICOM files)")


@dataclass
class ImageData:
    """An image or volume in napari axis order with its voxel spacing, affine and metadata.

    ``spacing`` has one entry per spatial axis; an array with one more axis than ``spacing`` carries
    channels last (RGB(A)). When ``spacing`` is omitted it is 1.0 per axis, and a trailing channel axis is
    assumed only if ``meta["rgb"]`` is true.
    """

    array: np.ndarray
    spacing: tuple[float, ...] | None = None
    affine: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ndim = np.ndim(self.array)
        if self.spacing is None:
            self.spacing = (1.0,) * (ndim - int(bool(self.meta.get("rgb", False))))
        self.spacing = tuple(float(s) for s in self.spacing)
        if len(self.spacing) not in (ndim, ndim - 1) or not self.spacing:
            raise ValueError(f"spacing {self.spacing} does not fit an array of shape {np.shape(self.array)}: "
                             "give one value per spatial axis")
        if not all(np.isfinite(s) and s > 0 for s in self.spacing):
            raise ValueError(f"spacing {self.spacing} must be positive and finite")
        if self.affine is not None:
            self.affine = np.asarray(self.affine, dtype=np.float64)
            if self.affine.shape != (4, 4) or not np.all(np.isfinite(self.affine)):
                raise ValueError(f"affine must be a finite 4x4 matrix, got shape {self.affine.shape}")

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape of the spatial axes (without a channel axis)."""
        return tuple(np.shape(self.array)[: len(self.spacing)])

    @property
    def rgb(self) -> bool:
        """True when the last axis holds colour channels."""
        return np.ndim(self.array) > len(self.spacing)
