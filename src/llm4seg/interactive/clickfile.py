"""Clicks from files, and replaying them on a segmentation (``llm4seg segment --clicks``)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .prompts import Click
from .refine import prepare, refine

__all__ = ["read_clicks", "apply_clicks"]

_TRUE = {"1", "true", "yes", "positive", "add", "+"}
_FALSE = {"0", "false", "no", "negative", "remove", "-"}


def _flag(value: Any, where: str) -> bool:
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{where}: cannot read {value!r} as positive/negative (use true/false)")


def read_clicks(path: str | Path) -> list[Click]:
    """Clicks from a JSON list of ``{"y": …, "x": …, "positive": …[, "z": …]}`` or a napari Points CSV
    (columns ``axis-0``, ``axis-1`` [, ``axis-2``]: the last two are y and x, a third from the end is z;
    an optional ``positive`` column, true when absent). Pixel coordinates of the image, oldest click first."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such clicks file")
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        axes = sorted((k for k in (rows[0] if rows else {}) if k.startswith("axis-")), key=lambda k: int(k[5:]))
        if len(axes) < 2:
            raise ValueError(f"{path}: a napari Points CSV needs columns axis-0 and axis-1 (y, x)")
        out = []
        for i, row in enumerate(rows):
            pos = _flag(row["positive"], f"{path} row {i + 1}") if row.get("positive") not in (None, "") else True
            z = int(round(float(row[axes[-3]]))) if len(axes) >= 3 else None
            out.append(Click(float(row[axes[-2]]), float(row[axes[-1]]), pos, z))
        return out
    try:
        items = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(items, list):
        raise ValueError(f'{path}: expected a JSON list of {{"y": …, "x": …, "positive": …}} objects')
    out = []
    for i, d in enumerate(items):
        if not isinstance(d, dict) or "y" not in d or "x" not in d:
            raise ValueError(f'{path}: click {i + 1} needs "y" and "x" (pixel coordinates)')
        pos = _flag(d["positive"], f"{path} click {i + 1}") if "positive" in d else True
        out.append(Click(float(d["y"]), float(d["x"]), pos, None if d.get("z") is None else int(d["z"])))
    return out


def apply_clicks(image: np.ndarray, labels: np.ndarray, model: Any, clicks: Sequence[Click], *,
                 window: tuple[float, float] | None = None, label: int = 1) -> np.ndarray:
    """``labels`` with each clicked image/slice refined, click after click as a user would: the mask before
    each click is the previous mask of the next. The refined object gets value ``label``; other classes stay."""
    out = np.array(labels, copy=True)
    volume = out.ndim == 3  # labels of a volume (Z, Y, X); of a 2D or RGB image (Y, X)
    groups: dict[int | None, list[Click]] = {}
    for c in clicks:
        if volume and c.z is None:
            raise ValueError("clicks on a volume need z (the slice): add \"z\" to each click")
        groups.setdefault(c.z if volume else None, []).append(c)
    for z, group in groups.items():
        if z is not None and not 0 <= z < out.shape[0]:
            raise ValueError(f"click on slice z={z}, outside the volume's {out.shape[0]} slices")
        target = out if z is None else out[z]
        inp = prepare(image, model, z=z, window=window)
        mask = (target == label).astype(np.uint8)
        for k in range(len(group)):
            mask = refine(image, model, group[:k + 1], previous=mask, prepared=inp, z=z)
        target[(target == label) & (mask == 0)] = 0
        target[mask > 0] = label
    return out
