"""Training with simulated clicks (``TrainConfig.prompts = "clicks"``): the prompt channels of a batch.

Each sample of a batch gets one of three kinds of prompt (shares ``NO_PROMPT`` and ``PRIOR_ONLY``, the rest
clicks):
- none: zero prompt channels, so the automatic mode stays what it was;
- a prior only: the true mask, dilated or eroded and shifted, as ``previous`` (what a neighbouring slice
  hands on when a correction is propagated through a volume);
- clicks, as RITM and DeepEdit simulate them: the session starts from an empty mask (first click at the
  object's centre) or from the model's automatic mask, then 0-3 rounds run without gradients, each adding a
  click at the centre of the largest error of the model's own prediction and feeding that prediction back
  as ``previous``. Clicks are jittered (:func:`llm4seg.interactive.clicker.next_click`).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from ..interactive.clicker import next_click
from ..interactive.prompts import Click, click_radius, render_clicks

NO_PROMPT = 0.4
PRIOR_ONLY = 0.15
MAX_ROUNDS = 3
JITTER = 0.3

__all__ = ["add_training_prompts", "perturb_mask", "NO_PROMPT", "PRIOR_ONLY"]


def perturb_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``mask`` grown or shrunk by up to 6 % of its side and shifted by up to 5 %: a neighbour slice's mask."""
    side = max(mask.shape)
    k = int(rng.integers(-max(1, side // 16), max(1, side // 16) + 1))
    out = mask
    if k > 0:
        out = ndimage.binary_dilation(mask, iterations=k)
    elif k < 0:
        out = ndimage.binary_erosion(mask, iterations=-k)
    dy, dx = (int(v) for v in rng.integers(-side // 20, side // 20 + 1, size=2))
    return np.roll(out, (dy, dx), axis=(0, 1))


def _maps(names: tuple[str, ...], clicks: list[list[Click]], previous: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    n = max(1, max(len(c) for c in clicks))
    pts = torch.zeros(len(clicks), n, 3)
    for i, row in enumerate(clicks):
        for j, c in enumerate(row):
            pts[i, j] = torch.tensor([c.y, c.x, 1.0 if c.positive else -1.0])
    pos, neg = render_clicks(pts, hw, click_radius(max(hw))).unbind(1)
    zeros = torch.zeros_like(pos)
    maps = {"previous": previous, "positive": pos, "negative": neg, "box": zeros}
    return torch.stack([maps[k] for k in names], 1)


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, prompts: torch.Tensor) -> np.ndarray:
    was = {m: m.training for m in model.modules()}
    model.eval()
    try:
        logits = model(torch.cat([x, prompts.to(x)], 1))
    finally:
        for m, mode in was.items():
            m.training = mode
    return (logits[:, 0] > 0).cpu().numpy()


def add_training_prompts(model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``x`` (B, C, H, W) with the model's prompt channels appended, simulated against labels ``y`` (B, H, W)."""
    names = tuple(model.config.prompts)
    b, hw = x.shape[0], tuple(x.shape[-2:])
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    kind = rng.random(b)
    gt = (y == 1).cpu().numpy()
    previous = torch.zeros((b, *hw))
    clicks: list[list[Click]] = [[] for _ in range(b)]
    for i in np.nonzero((kind >= NO_PROMPT) & (kind < NO_PROMPT + PRIOR_ONLY))[0]:
        previous[i] = torch.from_numpy(perturb_mask(gt[i], rng).astype(np.float32))
    sel = np.nonzero(kind >= NO_PROMPT + PRIOR_ONLY)[0]
    if len(sel):
        xs = x[torch.from_numpy(sel).to(x.device)]
        prev = torch.zeros((len(sel), *hw))
        sub: list[list[Click]] = [[] for _ in sel]
        if rng.random() < 0.5:  # start from the automatic mask
            pred = _predict(model, xs, _maps(names, sub, prev, hw))
        else:
            pred = np.zeros((len(sel), *hw), dtype=bool)
        rounds = int(rng.integers(0, MAX_ROUNDS + 1))
        for r in range(rounds + 1):
            if r:
                pred = _predict(model, xs, _maps(names, sub, prev, hw))
            for j, i in enumerate(sel):
                c = next_click(pred[j], gt[i], jitter=JITTER, rng=rng)
                if c is not None:
                    sub[j].append(c)
            prev = torch.from_numpy(pred.astype(np.float32))
        for j, i in enumerate(sel):
            clicks[i], previous[i] = sub[j], prev[j]
    prompts = _maps(names, clicks, previous, hw).to(x)
    return torch.cat([x, prompts], 1)
