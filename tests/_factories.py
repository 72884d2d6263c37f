"""Small models and images shared by the core tests (kept tiny: the CPU has 2 cores)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from llm4seg.model import ModelConfig, build_model

TINY = dict(dims=(4, 8, 16, 16, 32), depths=(1, 1, 1, 1, 1), kernels=(3, 3, 3, 3, 3))
#: a one-layer Llama config for a randomly initialised frozen layer
TINY_LLAMA = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
                  num_hidden_layers=1, rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=4096,
                  vocab_size=16)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread (and leave the other core to the rest of the suite).

    Autouse in the modules that import it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
