"""Does fine-tuning beat the starting model on *these* images? A k-fold check over the labelled items.

Fine-tuning a good model on a few images can make it worse on the rest (the generalist on 10 CVC-ColonDB
frames: Dice 0.32 → 0.18 on other sequences; docs/finetuning.md). Before training on everything,
:func:`cross_check` splits the labelled items into folds; for each fold it scores the start on the held-out
fold, fine-tunes a copy on the other folds with the same settings and scores that copy on the same held-out
items. The two per-item mean Dice scores are paired (same items, same pixels), so their difference measures
what fine-tuning does to images neither model trained on. Each copy trains on fewer items than the final run
will, so the check leans towards keeping the start.

    check = run_to_end(cross_check(start, data, config, folds=2))
    if check is not None and check.keep_start: ...
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Generator

import numpy as np
import torch

from .device import resolve_device
from .events import Log, Progress, is_cancelled, relay
from .train import SliceSet, TrainConfig, fit
from .train.distributed import DistContext
from .train.steps import validate

__all__ = ["CheckResult", "fold_items", "cross_check", "CHECK_FOLDS"]

CHECK_FOLDS = 2  # the folds the Fine-tune widget's check uses


@dataclass(frozen=True)
class CheckResult:
    """Mean held-out Dice of the start and of the fine-tuned copies, over ``items`` labelled items."""

    folds: int
    items: int
    start_dice: float
    finetuned_dice: float

    @property
    def keep_start(self) -> bool:
        """True when the fine-tuned copies segmented the held-out items worse than the start did."""
        return self.finetuned_dice < self.start_dice

    def describe(self) -> str:
        return (f"{self.folds}-fold check on your {self.items} labelled item(s): Dice on held-out items "
                f"{self.start_dice:.3f} before fine-tuning, {self.finetuned_dice:.3f} after")

    def to_dict(self) -> dict[str, Any]:
        return {"folds": self.folds, "items": self.items, "start_dice": round(self.start_dice, 4),
                "finetuned_dice": round(self.finetuned_dice, 4), "kept": "start" if self.keep_start else "fine-tuned"}


def fold_items(data: SliceSet, folds: int) -> list[list[int]]:
    """Slice indices of each fold. With at least ``folds`` sources (images, volumes): contiguous blocks of
    them in the order given, since neighbouring files are often frames of one video or images of one patient,
    and a held-out near-copy of a training image would flatter the fine-tuned copy. Else the slices of the one
    volume dealt in turn along z, so that every fold spans the structure (the other slices of that volume are
    what will be segmented). Empty when there are fewer items than folds."""
    units = sorted(set(data.groups))
    if len(units) >= folds:
        by_unit = {u: [i for i, g in enumerate(data.groups) if g == u] for u in units}
        return [[i for u in block for i in by_unit[u]] for block in np.array_split(np.array(units), folds)]
    if len(data) < folds:
        return []
    return [list(range(f, len(data), folds)) for f in range(folds)]


def cross_check(start: torch.nn.Module, data: SliceSet, config: TrainConfig, folds: int = CHECK_FOLDS,
                cancel: Any = None) -> Generator[Any, None, CheckResult | None]:
    """Score ``start`` and copies fine-tuned on the other folds on each held-out fold (see the module
    docstring). Yields ``Progress`` (phase "checking") and warning ``Log`` lines; returns None when cancelled,
    when a fold's training fails or when there are fewer labelled items than folds."""
    groups = fold_items(data, folds)
    if not groups:
        return None
    total = folds * config.total_steps(len(data) - len(groups[0]))
    ctx = DistContext(device=resolve_device(config.device))
    sums = {"start": 0.0, "tuned": 0.0, "n": 0}
    offset = 0
    for f, held in enumerate(groups):
        train_set = data.subset([i for i in range(len(data)) if i not in set(held)])
        held_set = data.subset(held)
        start.to(ctx.device)
        sums["start"] += validate(start, held_set, ctx)["val_dice"] * len(held)
        copy_model = copy.deepcopy(start)
        steps = config.total_steps(len(train_set))
        fold_config = config.replace(select="last", val_every=steps, seed=config.seed + 1000 * (f + 1))
        result = yield from relay(fit(copy_model, train_set, held_set, fold_config, cancel), keep=_is_step,
                                  transform=_as_check_step(offset, total, f, folds))
        offset += steps
        if is_cancelled(cancel) or result.status != "done" or "val_dice" not in result.metrics:
            if result.status == "failed":
                yield Log(f"the check against the start stopped ({result.reason}); fine-tuning without it", "warning")
            return None
        sums["tuned"] += result.metrics["val_dice"] * len(held)
        sums["n"] += len(held)
    n = max(1, sums["n"])
    return CheckResult(folds, sums["n"], sums["start"] / n, sums["tuned"] / n)


def _is_step(event: Any) -> bool:
    """A fold's training steps pass (as steps of the check); its log lines and metrics would read as those of
    the real run."""
    return isinstance(event, Progress) and event.phase == "training"


def _as_check_step(offset: int, total: int, fold: int, folds: int) -> Any:
    def relabel(event: Progress) -> Progress:
        return Progress(offset + event.done, total, f"checking: fold {fold + 1}/{folds}, step {event.done}/"
                        f"{event.total}", phase="checking")

    return relabel
