"""Flip + rot90 augmentation (the paper's), vectorised over a batch of tensors.

Each sample gets one of the 8 symmetries of the square (identity, 3 rotations, 4 flips/transposes),
drawn uniformly; images and labels get the same one. Non-square batches only get the symmetries that
keep the shape (identity, rot180, the two flips).
"""
from __future__ import annotations

import torch

__all__ = ["dihedral", "random_dihedral", "apply_dihedral", "augment_batch"]


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
