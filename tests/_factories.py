"""Small models and images shared by the core tests (kept tiny: the CPU has 2 cores)."""
from __future__ import annotations

import numpy as np

from llm4seg.model import ModelConfig, build_model

TINY = dict(dims=(4, 8, 16, 16, 32), depths=(1, 1, 1, 1, 1), kernels=(3, 3, 3, 3, 3))


def tiny_model(llm: str | None = None, **kw):
    """A small CMUNeXt (optionally with a real LLM layer) for fast tests."""
    seed = kw.pop("seed", 0)
    return build_model(ModelConfig(llm=llm, **{**TINY, **kw}), seed=seed)


def disk_image(h: int = 64, w: int = 64, dtype=np.uint8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy bright disk on a dark background and its mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    mask = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < (min(h, w) / 4) ** 2
    img = 40 + 150 * mask + rng.normal(0, 10, (h, w))
    return np.clip(img, 0, 255).astype(dtype), mask.astype(np.uint8)
