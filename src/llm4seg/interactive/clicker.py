"""A simulated user: where the next click goes, given the current mask and the true one.

The rule of RITM and DeepEdit's simulations: click at the centre (distance-transform maximum) of the
largest error region, positive when that region is a missed part of the object, negative when it is a
false one. The first click on an empty mask is thus the centre of the object. ``jitter`` moves the click
to a random pixel of the region whose distance to the region's border is at least ``1 - jitter`` of the
maximum (training uses it; benchmarks click deterministically).
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
from scipy import ndimage

from .prompts import Click

__all__ = ["next_click", "click_session", "iou"]


def _inner_distance(region: np.ndarray) -> np.ndarray:
    """Distance of each pixel of ``region`` to the nearest pixel outside it (the image border counts as outside)."""
    return ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]


def next_click(pred: np.ndarray, target: np.ndarray, *, jitter: float = 0.0,
               rng: np.random.Generator | None = None) -> Click | None:
    """The simulated user's next click on a 2D mask ``pred`` against ``target`` (both boolean-like, same
    shape); None when the masks agree."""
    pred, target = np.asarray(pred) > 0, np.asarray(target) > 0
    missed = _inner_distance(target & ~pred)
    false = _inner_distance(pred & ~target)
    m_max, f_max = float(missed.max(initial=0.0)), float(false.max(initial=0.0))
    if m_max == 0.0 and f_max == 0.0:
        return None
    positive = m_max >= f_max
    dist, top = (missed, m_max) if positive else (false, f_max)
    if jitter > 0.0 and rng is not None:
        ys, xs = np.nonzero(dist >= max(1.0, (1.0 - jitter) * top))
        i = int(rng.integers(len(ys)))
        return Click(int(ys[i]), int(xs[i]), positive)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return Click(int(y), int(x), positive)


def iou(pred: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union of two masks (1.0 when both are empty)."""
    p, t = np.asarray(pred) > 0, np.asarray(target) > 0
    union = np.logical_or(p, t).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, t).sum() / union)


def click_session(predict: Callable[[list[Click], np.ndarray | None], np.ndarray], target: np.ndarray,
                  max_clicks: int = 20, start: np.ndarray | None = None) -> Iterator[tuple[list[Click], np.ndarray]]:
    """A simulated correction session: yields (clicks so far, mask) after each click, up to ``max_clicks``
    or until the masks agree. ``predict(clicks, previous)`` returns the mask after ``clicks``; ``start``: the
    mask the user starts from (the automatic segmentation; None: an empty mask)."""
    clicks: list[Click] = []
    mask = np.zeros(np.shape(target), dtype=np.uint8) if start is None else np.asarray(start)
    previous = None if start is None else mask
    for _ in range(max_clicks):
        click = next_click(mask, target)
        if click is None:
            return
        clicks.append(click)
        mask = predict(list(clicks), previous)
        previous = mask
        yield list(clicks), mask
