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


def trained_tiny(pairs, size: int = 32, steps: int = 120, classes=("background", "lesion")):
    """A tiny model with a card at ``size``², trained on ``pairs`` (objects with ``image``, ``labels`` and
    ``name``) so that it already segments them (about 5 s on one core)."""
    from llm4seg.checkpoint import ModelCard
    from llm4seg.events import run_to_end
    from llm4seg.preprocess import Preprocessing
    from llm4seg.train import TrainConfig, build_slices, fit, sources_from_arrays

    model = tiny_model()
    prep = Preprocessing(size=size)
    model.card = ModelCard(name="tiny", classes=list(classes), model=model.config.to_dict(),
                           preprocessing=prep.to_dict(), training={"data": "synthetic disks"})
    sources = sources_from_arrays([(p.image, p.labels) for p in pairs], names=[p.name for p in pairs])
    config = TrainConfig(steps=steps, batch_size=4, optimizer="adamw", lr=1e-2, schedule="cosine", augment=False,
                         select="last")
    run_to_end(fit(model, build_slices(sources, prep, list(classes)), None, config))
    return model.eval()


def organ_volume(depth: int = 24, side: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A bright ellipsoid (an organ) in noise: large disks in the middle slices, none at the ends."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[:depth, :side, :side]
    mask = ((zz - depth / 2) / (depth * 0.42)) ** 2 + ((yy - side / 2) ** 2 + (xx - side / 2) ** 2) / (side * 0.3) ** 2 < 1
    image = 40 + 140 * mask + rng.normal(0, 12, mask.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask.astype(np.uint8)
