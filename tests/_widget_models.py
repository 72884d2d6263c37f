"""Fast stand-in models for the widget tests: deterministic output, optional delay per batch."""
from __future__ import annotations

import time

import numpy as np
import torch

from llm4seg.checkpoint import ModelCard
from llm4seg.model import ModelConfig
from llm4seg.preprocess import Preprocessing


class ThresholdModel(torch.nn.Module):
    """Foreground where the normalised input is above mid-range (+ ``bias``); sleeps ``delay`` s per batch."""

    def __init__(self, delay: float = 0.0, classes: tuple[str, ...] = ("background", "lesion"),
                 window: tuple[float, float] | None = None, description: str = "threshold test model") -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
        self.config = ModelConfig(llm=None, num_classes=1)
        self.card = ModelCard(
            name="threshold", description=description, classes=list(classes),
            preprocessing=Preprocessing(size=None, window=window).to_dict(),
            training={"data": "synthetic disks"}, metrics={"dice": 1.0},
        )
        self.delay = delay
        self.batches = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches += 1
        if self.delay:
            time.sleep(self.delay)
        return x[:, :1] * 10.0 + self.bias


def disk(h: int = 48, w: int = 64, value: int = 200, dtype=np.uint8) -> tuple[np.ndarray, np.ndarray]:
    """A bright disk on a dark background (uint8) and its mask."""
    yy, xx = np.mgrid[:h, :w]
    mask = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < (min(h, w) / 4) ** 2
    img = np.where(mask, value, 30).astype(dtype)
    return img, mask.astype(np.uint8)


def ct_volume(z: int = 6, h: int = 32, w: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """An int16 HU volume: air (-1000) around a soft-tissue ball (+60 HU); and the ball's mask."""
    zz, yy, xx = np.mgrid[:z, :h, :w]
    mask = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < (min(h, w) / 3) ** 2
    return np.where(mask, 60, -1000).astype(np.int16), mask.astype(np.uint8)
