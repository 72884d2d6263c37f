"""Does fine-tuning beat the starting model on *these* images? A k-fold check over the labelled items.

Fine-tuning a good model on a few images can make it worse on the rest (the generalist on 10 CVC-ColonDB
frames: Dice 0.32 → 0.18 on other sequences; docs/finetuning.md). Before training on everything,
:func:`cross_check` splits the labelled items into folds; for each fold it fine-tunes a copy of the start on the
other folds with the same settings, then scores the start and that copy on each held-out item. The per-item
differences are paired (same items, same pixels) and measure what fine-tuning does to images neither model
trained on. The copies train on half the items the final run will, which handicaps them, so the start is
kept only when they lose more than :data:`MARGIN` Dice on average. Measured on the few-shot tasks
(``python -m benchmarks.fewshot_check``, docs/finetuning.md): copies of the generalist lost 0.15-0.29 on ISIC
and 0.01-0.09 on CVC-ColonDB, copies of the polyp model 0.05-0.12 on CVC-ColonDB (fine-tuning on all items
then lowered Dice on the eval sets: keep the start), while copies of the gray default on ISIC lost up to 0.04
although fine-tuning on all ten images raised eval Dice from 0.59 to 0.66 (fine-tune): 0.05 sorts 14 of the 15
such cases the way the eval-set scores of fine-tuning without the check say.

    check = run_to_end(cross_check(start, data, config, folds=2))
    if check is not None and check.keep_start: ...
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Generator

import numpy as np
import torch

from .anchor import predict_labels
from .device import resolve_device
from .events import Log, Progress, is_cancelled, relay
from .train import SliceSet, TrainConfig, fit
from .train.metrics import confusion_counts, scores

__all__ = ["CheckResult", "check_folds", "fold_items", "cross_check", "item_dice", "CHECK_FOLDS", "MARGIN", "MIN_ITEMS",
           "NOTHING_TO_KEEP", "SMALL_FOLDS", "check_against_start"]

CHECK_FOLDS = 2  # the folds the Fine-tune widget's check uses
MARGIN = 0.05  # Dice the check's copies may lose before the start is kept (see the module docstring)
#: Fewer labelled items than this and there is no check: copies trained on two or three slices lose to the start
#: where the final run on five gains (the generalist on 5 liver slices: kept at 0.842 where fine-tuning gave 0.880;
#: 5 hippocampus slices: kept at 0.304 where fine-tuning gave 0.620).
MIN_ITEMS = 8
#: From ``TrainConfig.crosscheck_images`` separate 2D images up to MIN_ITEMS, the check uses this many folds
#: (each copy trains on about two thirds of the images): fine-tuning a start that already fits (``polyp`` on
#: CVC-ColonDB) on 1-5 frames lost 0.10-0.24 Dice with no check to stop it. Slices of volumes keep MIN_ITEMS.
SMALL_FOLDS = 3
#: When the start scores below this mean Dice on the labelled items themselves, there is nothing to keep and the
#: check does not run (it tripled the time of runs it let through: TG3K from busi-lesion, start 0.00-0.02).
NOTHING_TO_KEEP = 0.2


@dataclass(frozen=True)
class CheckResult:
    """Per-item Dice of the start and of the fine-tuned copies on held-out labelled items; with no copies
    (``finetuned`` empty, ``folds`` 0), the start's Dice on every labelled item, too low to be worth keeping.
    ``weights`` (slices of volumes): each slice's labelled object pixels, so that means are pooled over the
    volume as its Dice is (a slice at the organ's tip counts for its few pixels); empty: every item counts once."""

    folds: int
    start: tuple[float, ...]
    finetuned: tuple[float, ...]
    weights: tuple[float, ...] = ()

    @property
    def items(self) -> int:
        return len(self.start)

    @property
    def ran(self) -> bool:
        """Copies were fine-tuned and scored (False: the start had nothing to keep)."""
        return bool(self.finetuned)

    def _w(self) -> np.ndarray:
        w = np.asarray(self.weights, float) if self.weights else np.ones(self.items)
        return w if w.sum() > 0 else np.ones(self.items)

    @property
    def start_dice(self) -> float:
        return float(np.average(self.start, weights=self._w()))

    @property
    def finetuned_dice(self) -> float:
        return float(np.average(self.finetuned, weights=self._w())) if self.ran else float("nan")

    @property
    def difference(self) -> tuple[float, float]:
        """Mean per-item difference (fine-tuned - start, weighted by ``weights``) and its standard error (0, 0
        when no copies ran)."""
        if not self.ran:
            return 0.0, 0.0
        d, w = np.asarray(self.finetuned) - np.asarray(self.start), self._w()
        mean = float(np.average(d, weights=w))
        if len(d) < 2:
            return mean, 0.0
        n_eff = w.sum() ** 2 / (w ** 2).sum()  # Kish's effective sample size
        var = float(np.average((d - mean) ** 2, weights=w)) * n_eff / max(1.0, n_eff - 1)
        return mean, float(np.sqrt(var / n_eff))

    @property
    def keep_start(self) -> bool:
        """True when the fine-tuned copies segmented the held-out items worse than the start by more than
        :data:`MARGIN` Dice on average."""
        return self.ran and self.difference[0] < -MARGIN

    def describe(self) -> str:
        if not self.ran:
            return (f"the start scored Dice {self.start_dice:.3f} on your {self.items} labelled item(s): nothing to "
                    "keep, so no check against it")
        mean, se = self.difference
        text = (f"{self.folds}-fold check on your {self.items} labelled item(s): Dice on held-out items "
                f"{self.start_dice:.3f} before fine-tuning, {self.finetuned_dice:.3f} after ({mean:+.3f} ± {se:.3f})")
        if self.weights:  # slices of a volume: what it measures, and what it cannot
            text += (" — on the slices you labelled, by copies trained on part of them; the rest of the volume "
                     "is what the change check looks at")
        return text

    def to_dict(self) -> dict[str, Any]:
        mean, se = self.difference
        return {"folds": self.folds, "items": self.items, "ran": self.ran, "pooled": bool(self.weights),
                "start_dice": round(self.start_dice, 4),
                "finetuned_dice": round(self.finetuned_dice, 4), "difference": round(mean, 4), "se": round(se, 4),
                "kept": "start" if self.keep_start else "fine-tuned",
                "per_item": [[round(a, 4), round(b, 4)] for a, b in zip(self.start, self.finetuned)]}


def _items(data: SliceSet) -> tuple[list[int], int]:
    """The sources (images, volumes) of ``data`` and its item count: the sources, or the slices of one volume."""
    units = sorted(set(data.groups))
    return units, max(len(units), len(data) if len(units) == 1 else 0)


def check_folds(data: SliceSet, folds: int, min_images: int = MIN_ITEMS) -> int:
    """Folds the check uses on ``data``: ``folds`` from :data:`MIN_ITEMS` items (images, or slices of one
    volume) on; :data:`SMALL_FOLDS` for ``min_images`` up to MIN_ITEMS separate 2D images (one slice each); 0
    (no check) otherwise."""
    units, items = _items(data)
    if items >= MIN_ITEMS:
        return folds if items >= folds else 0
    images = len(units) == len(data)
    return min(SMALL_FOLDS, items) if images and items >= max(2, min_images) else 0


def fold_items(data: SliceSet, folds: int, min_items: int = MIN_ITEMS) -> list[list[int]]:
    """Slice indices of each fold. With at least ``folds`` sources (images, volumes): contiguous blocks of
    them in the order given, since neighbouring files are often frames of one video or images of one patient,
    and a held-out near-copy of a training image would flatter the fine-tuned copy. Else the slices of the one
    volume dealt in turn along z, so that every fold spans the structure (the other slices of that volume are
    what will be segmented). Empty (no check) below ``min_items`` items (images, or slices of one volume) or
    when there are fewer items than folds."""
    units, items = _items(data)
    if items < min_items:
        return []
    if len(units) >= folds:
        by_unit = {u: [i for i, g in enumerate(data.groups) if g == u] for u in units}
        return [[i for u in block for i in by_unit[u]] for block in np.array_split(np.array(units), folds)]
    if len(data) < folds:
        return []
    return [list(range(f, len(data), folds)) for f in range(folds)]


def cross_check(start: torch.nn.Module, data: SliceSet, config: TrainConfig, folds: int = CHECK_FOLDS,
                cancel: Any = None) -> Generator[Any, None, CheckResult | None]:
    """Score ``start`` and copies fine-tuned on the other folds on each held-out fold (see the module
    docstring), with the folds :func:`check_folds` gives (``config.crosscheck_images``: fewest separate images
    checked below :data:`MIN_ITEMS`). Yields ``Progress`` (phase "checking") and warning ``Log`` lines;
    returns None when cancelled, when a fold's training fails or when there are too few labelled items, and
    a result without copies when the start scores below :data:`NOTHING_TO_KEEP` on the labelled items."""
    folds = check_folds(data, folds, config.crosscheck_images)
    groups = fold_items(data, folds, min_items=0) if folds else []
    if not groups:
        return None
    device = resolve_device(config.device)
    first = item_dice(start, data, device)
    if float(np.mean(first)) < NOTHING_TO_KEEP:
        return CheckResult(0, tuple(first), ())
    total = folds * config.total_steps(len(data) - len(groups[0]))
    units, _ = _items(data)
    pixels = (data.labels.reshape(len(data), -1) > 0).sum(1).tolist() if len(units) < len(data) else None
    before, after, weights = [], [], []
    offset = 0
    for f, held in enumerate(groups):
        out = set(held)
        train_set = data.subset([i for i in range(len(data)) if i not in out])
        held_set = data.subset(held)
        before += [first[i] for i in held]
        weights += [float(pixels[i]) for i in held] if pixels is not None else []
        copy_model = copy.deepcopy(start)
        steps = config.total_steps(len(train_set))
        fold_config = config.replace(select="last", val_every=steps, seed=config.seed + 1000 * (f + 1))
        result = yield from relay(fit(copy_model, train_set, None, fold_config, cancel), keep=_is_step,
                                  transform=_as_check_step(offset, total, f, folds))
        offset += steps
        if is_cancelled(cancel) or result.status != "done":
            if result.status == "failed":
                yield Log(f"the check against the start stopped ({result.reason}); fine-tuning without it", "warning")
            return None
        after += item_dice(copy_model, held_set, device)
    return CheckResult(folds, tuple(before), tuple(after), tuple(weights))


def item_dice(model: torch.nn.Module, data: SliceSet, device: torch.device, batch: int = 8) -> list[float]:
    """Dice of each slice of ``data`` (mean over foreground classes) at the model's input size."""
    pred = predict_labels(model, data, device, batch)
    return scores(confusion_counts(pred, data.labels.to(torch.uint8), data.num_classes))["dice"].mean(1).tolist()


def _is_step(event: Any) -> bool:
    """A fold's training steps pass (as steps of the check); its log lines and metrics would read as those of
    the real run."""
    return isinstance(event, Progress) and event.phase == "training"


def _as_check_step(offset: int, total: int, fold: int, folds: int) -> Any:
    def relabel(event: Progress) -> Progress:
        return Progress(offset + event.done, total, f"checking: fold {fold + 1}/{folds}, step {event.done}/"
                        f"{event.total}", phase="checking")

    return relabel


def check_against_start(model: torch.nn.Module, data: SliceSet, config: TrainConfig,
                 cancel: Any) -> Generator[Any, None, CheckResult | None]:
    """:func:`cross_check` with its outcome said in a log line (what the fine-tuning job runs)."""
    check = yield from cross_check(model, data, config, config.crosscheck, cancel)
    if check is None:
        if not is_cancelled(cancel):
            fewest = max(MIN_ITEMS, config.crosscheck)
            what = (f"{fewest} labelled slices of a volume or {config.crosscheck_images} separate images"
                    if config.crosscheck_images < fewest else f"{fewest} labelled images/slices")
            yield Log(f"fewer than {what}: fine-tuning without checking it against the start (folds of so few "
                      "items say little)")
        return None
    if check.keep_start:
        yield Log(f"{check.describe()}: fine-tuning made held-out items worse, so the model you started from is "
                  "kept. Label more (or more varied) images, or try the thorough preset", "warning",
                  topic="kept-start")
    else:
        yield Log(f"{check.describe()}{':' if check.ran else ';'} fine-tuning on all of them")
    return check
