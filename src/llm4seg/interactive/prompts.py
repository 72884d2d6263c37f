"""Prompts as the network sees them: clicks and boxes in image coordinates, rendered as input channels.

A prompted model (``ModelConfig.prompts``) takes, after the image channels, some of: ``previous`` (the mask
before the newest click, 0/1), ``positive`` and ``negative`` (disks around the clicks) and ``box`` (a filled
rectangle). Disks have a radius of :func:`click_radius` model pixels, so a click means the same at every
image size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Click", "Box", "click_radius", "to_model_coords", "render_clicks", "prompt_channels"]


@dataclass(frozen=True)
class Click:
    """A click at pixel (``y``, ``x``) of a 2D image (``z``: the slice of a volume). ``positive``: this
    pixel belongs to the object (add); ``False``: it does not (remove)."""

    y: float
    x: float
    positive: bool = True
    z: int | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "Click":
        z = d.get("z")
        return cls(float(d["y"]), float(d["x"]), bool(d.get("positive", True)), None if z is None else int(z))

    def to_dict(self) -> dict:
        d = {"y": self.y, "x": self.x, "positive": self.positive}
        return d if self.z is None else {**d, "z": self.z}


@dataclass(frozen=True)
class Box:
    """An axis-aligned box around the object, corners (``y0``, ``x0``) and (``y1``, ``x1``) in pixels."""

    y0: float
    x0: float
    y1: float
    x1: float

    def ordered(self) -> "Box":
        return Box(min(self.y0, self.y1), min(self.x0, self.x1), max(self.y0, self.y1), max(self.x0, self.x1))


def click_radius(side: int) -> float:
    """Disk radius in model pixels for a model input of ``side`` pixels (2 % of the side, at least 2)."""
    return max(2.0, 0.02 * side)


def to_model_coords(y: float, x: float, hw: tuple[int, int], model_hw: tuple[int, int], resized: bool) -> tuple[float, float]:
    """A pixel of the image (size ``hw``) in model-input coordinates: scaled when the image is resized to
    the model's size, unchanged when it is only padded."""
    if not resized:
        return float(y), float(x)
    return ((y + 0.5) * model_hw[0] / hw[0] - 0.5, (x + 0.5) * model_hw[1] / hw[1] - 0.5)


def render_clicks(points: torch.Tensor, hw: tuple[int, int], radius: float) -> torch.Tensor:
    """Positive and negative disk maps (B, 2, H, W) from ``points`` (B, N, 3): rows (y, x, sign) in model
    pixels, sign +1 positive, -1 negative, 0 unused."""
    b, n, _ = points.shape
    out = points.new_zeros((b, 2, *hw))
    if n == 0:
        return out
    yy = torch.arange(hw[0], device=points.device, dtype=points.dtype).view(1, 1, -1, 1)
    xx = torch.arange(hw[1], device=points.device, dtype=points.dtype).view(1, 1, 1, -1)
    d2 = (yy - points[..., 0, None, None]) ** 2 + (xx - points[..., 1, None, None]) ** 2  # (B, N, H, W)
    inside = d2 <= radius * radius
    sign = points[..., 2]
    out[:, 0] = (inside & (sign > 0)[..., None, None]).any(1).to(out.dtype)
    out[:, 1] = (inside & (sign < 0)[..., None, None]).any(1).to(out.dtype)
    return out


def _resize_mask(mask: np.ndarray, model_hw: tuple[int, int], resized: bool) -> torch.Tensor:
    """A 0/1 mask of the image at the model's size (resized, or zero-padded)."""
    m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    if tuple(m.shape[-2:]) == tuple(model_hw):
        return m[0, 0]
    if resized:
        m = F.interpolate(m, size=model_hw, mode="bilinear", align_corners=False, antialias=True)
        return (m[0, 0] >= 0.5).float()  # binary, as in training
    return F.pad(m, (0, model_hw[1] - m.shape[-1], 0, model_hw[0] - m.shape[-2]))[0, 0]


def prompt_channels(names: Sequence[str], clicks: Sequence[Click], previous: np.ndarray | None, box: Box | None,
                    hw: tuple[int, int], model_hw: tuple[int, int], resized: bool) -> torch.Tensor:
    """The prompt channels ``names`` (P, h, w) for one image of size ``hw`` fed at ``model_hw``."""
    maps: dict[str, torch.Tensor] = {}
    rows = [(*to_model_coords(c.y, c.x, hw, model_hw, resized), 1.0 if c.positive else -1.0) for c in clicks]
    pts = torch.tensor(rows, dtype=torch.float32).view(1, len(rows), 3)
    pos, neg = render_clicks(pts, model_hw, click_radius(max(model_hw)))[0]
    maps["positive"], maps["negative"] = pos, neg
    zeros = torch.zeros(model_hw)
    maps["previous"] = zeros if previous is None else _resize_mask(np.asarray(previous) > 0, model_hw, resized)
    if box is not None:
        b = box.ordered()
        y0, x0 = to_model_coords(b.y0, b.x0, hw, model_hw, resized)
        y1, x1 = to_model_coords(b.y1, b.x1, hw, model_hw, resized)
        rect = torch.zeros(model_hw)
        rect[max(0, int(np.floor(y0))):int(np.ceil(y1)) + 1, max(0, int(np.floor(x0))):int(np.ceil(x1)) + 1] = 1
        maps["box"] = rect
    else:
        maps["box"] = zeros
    return torch.stack([maps[n] for n in names])
