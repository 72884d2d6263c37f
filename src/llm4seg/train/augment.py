"""Flip + rot90 augmentation (the paper's), vectorised over a batch of tensors, and an optional jitter.

Each sample gets one of the 8 symmetries of the square (identity, 3 rotations, 4 flips/transposes),
drawn uniformly; images and labels get the same one. Non-square batches only get the symmetries that
keep the shape (identity, rot180, the two flips). The jitter (:func:`random_jitter`, :func:`apply_jitter`)
adds a small rotation, zoom and shift and changes gamma, contrast, brightness, colour balance and noise:
variations between scanners, cameras and sites that the symmetries do not cover.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

__all__ = ["dihedral", "random_dihedral", "apply_dihedral", "augment_batch", "Jitter", "random_jitter",
           "apply_jitter"]


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Symmetry ``k`` (0..7) of the last two axes: rotate by 90°·(k % 4), then transpose if k >= 4."""
    y = torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x
    return y.transpose(-2, -1) if k >= 4 else y


def apply_dihedral(x: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
    """Apply symmetry ``ks[i]`` to sample ``x[i]``: one indexing op per distinct symmetry in the batch."""
    out = torch.empty_like(x)
    for k in torch.unique(ks).tolist():
        idx = (ks == k).nonzero().flatten().to(x.device)
        out[idx] = dihedral(x[idx], int(k))
    return out


def random_dihedral(n: int, square: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` symmetry ids: uniform over 0..7 for square images; for H != W over the shape-preserving
    ones: identity (0), rot180 (2), left-right flip (5) and up-down flip (7)."""
    choice = torch.randint(0, 8 if square else 4, (n,), generator=generator)
    return choice if square else torch.tensor([0, 2, 5, 7])[choice]


def augment_batch(images: torch.Tensor, labels: torch.Tensor, ks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply per-sample symmetries ``ks`` to images (B, C, H, W) and labels (B, H, W) alike."""
    return apply_dihedral(images, ks), apply_dihedral(labels, ks)


@dataclass
class Jitter:
    """Per-sample draws of the optional augmentation beyond the symmetries (``TrainConfig.jitter``): a
    rotation (radians), a zoom factor and a shift (fractions of the half-width); then gamma, contrast,
    brightness, a gain per channel and additive Gaussian noise (``noise``: the field itself, (N, C, H, W)),
    all in the [0, 1] intensity space the preprocessing maps each image or CT window to."""

    angle: torch.Tensor
    zoom: torch.Tensor
    shift: torch.Tensor
    gamma: torch.Tensor
    contrast: torch.Tensor
    brightness: torch.Tensor
    gain: torch.Tensor
    noise: torch.Tensor

    def part(self, index: slice | torch.Tensor) -> "Jitter":
        """The draws of the samples ``index``."""
        return Jitter(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def random_jitter(shape: tuple[int, int, int, int], strength: float = 1.0,
                  generator: torch.Generator | None = None, device: torch.device | str | None = None) -> Jitter:
    """Draws for a batch of ``shape`` (N, C, H, W). ``strength`` 1: rotation ±15°, zoom 0.8-1.25, shift
    ±10 %, gamma 0.74-1.35, contrast ±25 %, brightness ±0.1, colour gains ±10 % (RGB only), noise sd up to
    0.03; smaller or larger strengths scale every range; 0 draws the identity. ``device``: where to draw
    (the generator's device; on CUDA without a generator the draws can be captured in a CUDA graph)."""
    n, c = shape[:2]

    def u(*size: int) -> torch.Tensor:  # uniform in [-strength, strength]
        return (torch.rand(*size, generator=generator, device=device) * 2 - 1) * strength

    sd = (u(n) + strength) / 2 * 0.03
    return Jitter(angle=u(n) * math.radians(15), zoom=torch.exp(u(n) * math.log(1.25)), shift=u(n, 2) * 0.1,
                  gamma=torch.exp(u(n) * 0.3), contrast=1 + u(n) * 0.25, brightness=u(n) * 0.1,
                  gain=1 + u(n, c) * 0.1 * (c > 1),
                  noise=torch.randn(shape, generator=generator, device=device) * sd.view(n, 1, 1, 1))


def apply_jitter(images: torch.Tensor, labels: torch.Tensor, jitter: Jitter, mean: float,
                 std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate/zoom/shift images (bilinear) and labels (nearest) alike, reflecting at the borders, then
    change the images' appearance. ``images`` (B, C, H, W) are normalised with ``mean``/``std``; labels (B, H, W)."""
    def per_sample(v: torch.Tensor) -> torch.Tensor:
        return v.to(images.device, images.dtype).view(len(images), -1, 1, 1)

    cos, sin = torch.cos(jitter.angle) / jitter.zoom, torch.sin(jitter.angle) / jitter.zoom
    theta = torch.stack([torch.stack([cos, -sin, jitter.shift[:, 0]], 1),
                         torch.stack([sin, cos, jitter.shift[:, 1]], 1)], 1).to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    x = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    y = F.grid_sample(labels[:, None].to(images.dtype), grid, mode="nearest", padding_mode="reflection",
                      align_corners=False)[:, 0].round().to(labels.dtype)
    x = (x * std + mean).clamp(0, 1) ** per_sample(jitter.gamma)
    centre = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - centre) * per_sample(jitter.contrast) + centre + per_sample(jitter.brightness)
    x = x * per_sample(jitter.gain) + jitter.noise.to(images.device, images.dtype)
    return (x.clamp(0, 1) - mean) / std, y
