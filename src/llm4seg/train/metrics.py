"""Segmentation metrics (numpy/torch, no Qt): IoU, Dice, sensitivity, precision, specificity, accuracy, HD95.

Two ways of summarising a set of images, both reported:

* **per image** (keys without suffix, e.g. ``iou``): the metric is computed on each image (2D slice)
  separately and then averaged over images. Every image weighs the same, however large its object.
* **pooled** (keys with ``_pooled``, e.g. ``iou_pooled``): true/false positive/negative pixel counts are
  summed over all images first and the metric is computed once. Large objects weigh more.

For multi-class labels every foreground class ``c`` is scored one-vs-rest (``labels == c``); the
top-level numbers are the mean over foreground classes, ``per_class`` holds each class.

Edge cases (per image, per class), chosen so that "nothing there and nothing predicted" is perfect:

* IoU, Dice: truth and prediction both empty → 1.0; exactly one empty → 0.0.
* sensitivity = TP/(TP+FN): truth empty → 1.0 if the prediction is empty too, else 0.0.
* precision = TP/(TP+FP): prediction empty → 1.0 if the truth is empty too, else 0.0.
* specificity = TN/(TN+FP): no background pixel in the truth → 1.0 if FP == 0 (always true then).
* accuracy = (TP+TN)/all: always defined.
* HD95 (symmetric 95th percentile Hausdorff distance between the object boundaries, in pixels or in
  ``spacing`` units): both empty → 0.0; exactly one empty → NaN (undefined). NaNs are left out of the
  per-image mean and counted in ``hd95_undefined``. ``hd95_pooled`` is the 95th percentile of all
  boundary distances of all images together (images where both sides are non-empty).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from scipy import ndimage

__all__ = ["confusion_counts", "scores", "hd95", "surface_distances", "MetricAccumulator", "evaluate_labels"]

SCORES = ("iou", "dice", "sensitivity", "precision", "specificity", "accuracy")


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.ascontiguousarray(x))


def confusion_counts(pred: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor, num_classes: int = 1) -> np.ndarray:
    """Pixel counts per image and foreground class: array (N, K, 4) of [TP, FP, FN, TN] (int64).

    ``pred`` and ``truth`` are integer label maps (N, H, W) or (H, W) with values 0..num_classes
    (binary: {0, 1}). ``num_classes`` counts foreground classes (1 = binary).
    """
    p, t = _as_tensor(pred), _as_tensor(truth)
    if p.shape != t.shape:
        raise ValueError(f"prediction {tuple(p.shape)} and truth {tuple(t.shape)} must have the same shape")
    if p.ndim == 2:
        p, t = p[None], t[None]
    p, t = p.reshape(p.shape[0], -1), t.reshape(t.shape[0], -1)
    out = torch.empty((p.shape[0], num_classes, 4), dtype=torch.int64)
    total = p.shape[1]
    for k in range(num_classes):
        pk, tk = p == (k + 1), t == (k + 1)
        tp = (pk & tk).sum(1)
        fp = pk.sum(1) - tp
        fn = tk.sum(1) - tp
        out[:, k] = torch.stack([tp, fp, fn, total - tp - fp - fn], 1).cpu()
    return out.numpy()


def _ratio(num: np.ndarray, den: np.ndarray, if_empty: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / np.where(den > 0, den, 1)
    return np.where(den > 0, r, if_empty).astype(np.float64)


def scores(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics from [TP, FP, FN, TN] counts (any leading shape), with the edge cases of the module doc."""
    c = np.asarray(counts, dtype=np.float64)
    tp, fp, fn, tn = c[..., 0], c[..., 1], c[..., 2], c[..., 3]
    both_empty = (tp + fp + fn) == 0
    one = both_empty.astype(np.float64)
    return {
        "iou": _ratio(tp, tp + fp + fn, one),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, one),
        "sensitivity": _ratio(tp, tp + fn, (fp == 0).astype(np.float64)),
        "precision": _ratio(tp, tp + fp, (fn == 0).astype(np.float64)),
        "specificity": _ratio(tn, tn + fp, (fp == 0).astype(np.float64)),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn, np.ones_like(tp)),
    }


def _boundary(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1), border_value=0)


def surface_distances(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray | None:
    """Distances from each boundary pixel of one mask to the other mask's boundary, both directions.

    Returns None when exactly one mask is empty, an empty array when both are.
    """
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if not pred.any() and not truth.any():
        return np.zeros(0)
    if not pred.any() or not truth.any():
        return None
    bp, bt = _boundary(pred), _boundary(truth)
    dt_t = ndimage.distance_transform_edt(~bt, sampling=spacing)
    dt_p = ndimage.distance_transform_edt(~bp, sampling=spacing)
    return np.concatenate([dt_t[bp], dt_p[bt]])


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """Symmetric 95th-percentile Hausdorff distance of two binary masks (0.0 both empty, NaN one empty)."""
    d = surface_distances(pred, truth, spacing)
    if d is None:
        return float("nan")
    return float(np.percentile(d, 95)) if d.size else 0.0


@dataclass
class MetricAccumulator:
    """Collects predictions batch by batch; ``compute()`` gives per-image means and pooled values.

    ``hd`` enables HD95 (scipy distance transforms on CPU; slower than the pixel counts).
    """

    num_classes: int = 1
    class_names: Sequence[str] | None = None
    hd: bool = True
    _counts: list[np.ndarray] = field(default_factory=list)
    _hd: list[np.ndarray] = field(default_factory=list)
    _dists: list[list[np.ndarray]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._dists = [[] for _ in range(self.num_classes)]

    def update(self, pred: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor,
               spacing: Sequence[float] | None = None) -> None:
        """Add label maps (N, H, W) or (H, W)."""
        self._counts.append(confusion_counts(pred, truth, self.num_classes))
        if not self.hd:
            return
        p, t = (np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x) for x in (pred, truth))
        if p.ndim == 2:
            p, t = p[None], t[None]
        values = np.full((p.shape[0], self.num_classes), np.nan)
        for i in range(p.shape[0]):
            for k in range(self.num_classes):
                d = surface_distances(p[i] == k + 1, t[i] == k + 1, spacing)
                if d is not None:
                    values[i, k] = float(np.percentile(d, 95)) if d.size else 0.0
                    if d.size:
                        self._dists[k].append(d.astype(np.float32))
        self._hd.append(values)

    @property
    def n(self) -> int:
        return int(sum(c.shape[0] for c in self._counts))

    def counts(self) -> np.ndarray:
        """All per-image counts so far, (N, K, 4)."""
        return np.concatenate(self._counts) if self._counts else np.zeros((0, self.num_classes, 4), np.int64)

    def compute(self) -> dict[str, Any]:
        """``{"n", <metric>, <metric>_pooled, "hd95", "hd95_pooled", "hd95_undefined", "per_class": {...}}``."""
        return summarise(self.counts(), np.concatenate(self._hd) if self._hd else None, self._dists,
                         self.class_names, self.num_classes)


def summarise(counts: np.ndarray, hd_values: np.ndarray | None, dists: list[list[np.ndarray]] | None,
              class_names: Sequence[str] | None, num_classes: int) -> dict[str, Any]:
    """The metrics dictionary from per-image counts (N, K, 4) and optional per-image HD95 values (N, K)."""
    names = list(class_names or [])
    fg = names[1:] if len(names) == num_classes + 1 else [f"class {k + 1}" for k in range(num_classes)]
    if num_classes == 1 and not class_names:
        fg = ["foreground"]
    n = int(counts.shape[0])
    per_image = scores(counts)                      # (N, K)
    pooled = scores(counts.sum(0)) if n else None   # (K,)
    per_class: dict[str, dict[str, float]] = {}
    for k, name in enumerate(fg):
        entry: dict[str, float] = {}
        for key in SCORES:
            entry[key] = float(per_image[key][:, k].mean()) if n else float("nan")
            entry[key + "_pooled"] = float(pooled[key][k]) if n else float("nan")
        if hd_values is not None:
            col = hd_values[:, k]
            entry["hd95"] = float(np.nanmean(col)) if np.isfinite(col).any() else float("nan")
            entry["hd95_undefined"] = int(np.isnan(col).sum())
            all_d = np.concatenate(dists[k]) if dists and dists[k] else np.zeros(0)
            entry["hd95_pooled"] = float(np.percentile(all_d, 95)) if all_d.size else float("nan")
        per_class[name] = entry
    out: dict[str, Any] = {"n": n}
    keys = [k for key in SCORES for k in (key, key + "_pooled")]
    if hd_values is not None:
        keys += ["hd95", "hd95_pooled"]
    for key in keys:
        vals = [e[key] for e in per_class.values() if np.isfinite(e[key])]
        out[key] = float(np.mean(vals)) if vals else float("nan")
    if hd_values is not None:
        out["hd95_undefined"] = int(sum(e["hd95_undefined"] for e in per_class.values()))
    out["per_class"] = per_class
    return out


def evaluate_labels(preds: np.ndarray | Sequence[np.ndarray], truths: np.ndarray | Sequence[np.ndarray],
                    num_classes: int = 1, *, class_names: Sequence[str] | None = None,
                    spacing: Sequence[float] | None = None, hd: bool = True) -> dict[str, Any]:
    """Metrics of label maps: a stack (N, H, W) or a list of (H, W) maps of possibly different sizes."""
    acc = MetricAccumulator(num_classes=num_classes, class_names=class_names, hd=hd)
    if isinstance(preds, (np.ndarray, torch.Tensor)) and np.ndim(preds) in (2, 3):
        acc.update(preds, truths, spacing)
    else:
        for p, t in zip(preds, truths):
            acc.update(p, t, spacing)
    return acc.compute()
