"""Keeping a fine-tune close to its start away from the corrections, and saying when it is not.

A user corrects a few slices of a volume (or labels a few images) and fine-tunes. Trained on those alone, the
model learns *what* to change but nothing holds the rest in place: three corrected slices at the tip of a liver
taught ``ct-liver`` that the liver is small, and it erased the organ everywhere else (whole-volume Dice 0.874 →
0.027). Two remedies, both on the user's own data:

* **Context distillation** (learning without forgetting): the user's *other* slices (spread over each volume,
  away from the corrected ones) and any other images they hand over are labelled with the start's own
  prediction and train beside the corrections, as a share :data:`KEEP` of the samples. Corrections still win
  where they are; elsewhere the model is asked to keep doing what it did.
* **The change check** (:func:`change_check`): after training, the start and the new model segment further
  slices of the user's items, never trained on, and the report says how much the mask changed there, per
  slice range; a drastic change (an object shrinking or growing by more than half) is flagged.

    context = run_to_end(build_context(start, plan, prep, device))    # distilled + checked slices
    report = change_check(new_model, context.checked, device)
    if report.drastic: ...
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generator, Sequence

import numpy as np
import torch

from .events import Log
from .preprocess import Preprocessing, logits_to_labels
from .train import SliceSet, build_slices, sources_from_arrays

__all__ = ["KEEP", "CONTEXT_SLICES", "MARGIN", "DRASTIC", "NOTABLE", "Context", "ChangeReport", "build_context",
           "change_check", "with_context", "predict_labels", "hold"]

KEEP = 0.5            # share of training samples drawn from the context (docs/finetuning.md, correction patterns)
CONTEXT_SLICES = 48   # most slices per volume the start labels: half distilled, half checked
MARGIN = 2            # slices on either side of a corrected one left out (they share its error) ...
MARGIN_SHARE = 0.15   # ... or this share of the volume's depth, when more: a correction governs its neighbourhood
DRASTIC = 0.5         # the object shrinks or grows by more than this fraction outside the corrections
NOTABLE = 0.2         # ... by more than this: said, with a suggestion to look (not drastic)
AGREEMENT = (0.5, 0.85)  # or the start's and the new masks agree (Dice) below these: drastic, notable
MIN_PIXELS = 64       # at the model's input size: fewer foreground pixels than this is no object to lose


@dataclass
class Context:
    """The user's uncorrected slices/images at the model's input, labelled with the start's prediction:
    ``distilled`` trains beside the corrections, ``checked`` is kept for :func:`change_check`."""

    distilled: SliceSet | None
    checked: SliceSet | None

    @property
    def empty(self) -> bool:
        return self.distilled is None and self.checked is None


@dataclass
class ChangeReport:
    """Foreground pixels of the start and of the new model on slices neither trained on, per class and per
    slice range (``ranges``: label, start pixels, new pixels per class, agreement Dice)."""

    class_names: list[str]
    slices: int
    start: list[int]
    new: list[int]
    agreement: float
    ranges: list[tuple[str, list[int], list[int], float]] = field(default_factory=list)

    def ratio(self, k: int) -> float:
        """New / start foreground of class k (inf when the start had none and the new model draws some)."""
        s, n = self.start[k], self.new[k]
        return n / s if s else (float("inf") if n >= MIN_PIXELS else 1.0)

    def _beyond(self, share: float) -> bool:
        return any(max(s, n) >= MIN_PIXELS and abs(self.ratio(k) - 1.0) > share
                   for k, (s, n) in enumerate(zip(self.start, self.new)))

    @property
    def drastic(self) -> bool:
        """Some class shrank or grew by more than :data:`DRASTIC` outside the corrections (with at least
        :data:`MIN_PIXELS` foreground pixels on one side), or the masks agree below ``AGREEMENT[0]``."""
        return self._beyond(DRASTIC) or self.agreement < AGREEMENT[0]

    @property
    def notable(self) -> bool:
        """Some class shrank or grew by more than :data:`NOTABLE`, or the masks agree below ``AGREEMENT[1]``
        (an object that moved keeps its size): worth a look before using the new model."""
        return self._beyond(NOTABLE) or self.agreement < AGREEMENT[1]

    def describe(self) -> str:
        parts = []
        for k, name in enumerate(self.class_names[1:]):
            r = self.ratio(k)
            change = "appears" if r == float("inf") else f"{100 * (r - 1):+.0f} %"
            parts.append(f"{name} {self.start[k]:,} → {self.new[k]:,} px ({change})")
        where = f"{self.slices} uncorrected slice(s)/image(s)"
        head = f"outside your corrections ({where}): {'; '.join(parts)}, agreement Dice {self.agreement:.3f}"
        if self.drastic:
            head = "the mask changed drastically " + head
        elif self.notable:
            head = "the mask changed noticeably " + head
        return head

    def to_dict(self) -> dict[str, Any]:
        return {"slices": self.slices, "classes": self.class_names[1:], "start_px": self.start,
                "new_px": self.new, "agreement": round(self.agreement, 4), "drastic": self.drastic,
                "notable": self.notable,
                "ranges": [{"range": r, "start_px": s, "new_px": n, "agreement": round(a, 4)}
                           for r, s, n, a in self.ranges]}


def _spread(depth: int, corrected: Sequence[int], limit: int, margin: int) -> list[int]:
    """Up to ``limit`` evenly spaced slices of ``depth`` at least ``margin`` + 1 away from every corrected one."""
    near = set()
    for z in corrected:
        near.update(range(int(z) - margin, int(z) + margin + 1))
    free = [z for z in range(depth) if z not in near]
    if len(free) <= limit:
        return free
    return [free[int(i)] for i in np.linspace(0, len(free) - 1, limit).round()]


@torch.no_grad()
def predict_labels(model: torch.nn.Module, data: SliceSet, device: torch.device, batch: int = 8) -> torch.Tensor:
    """The model's label map (uint8, N × S × S) of every slice of ``data`` at its input size."""
    was = model.training
    model.to(device).eval()
    out = []
    try:
        for i in range(0, len(data), batch):
            x = data.images[i:i + batch].to(device).float()
            out.append(logits_to_labels(model(x).float()).cpu())
    finally:
        model.train(was)
    return torch.cat(out) if out else torch.zeros((0, data.size, data.size), dtype=torch.uint8)


def _volume_picks(depth: int, corrected: Sequence[int], limit: int, margin: int,
                  far: int) -> tuple[list[int], list[int]]:
    """(distilled, checked) slices of one volume: half of ``limit`` slices more than ``far`` from every
    corrected one, and half of ``limit`` of the other slices more than ``margin`` from them."""
    distilled = _spread(depth, corrected, limit, far)[0::2]
    rest = [z for z in _spread(depth, corrected, depth, margin) if z not in set(distilled)]
    checked = [rest[int(i)] for i in np.linspace(0, len(rest) - 1, min(len(rest), limit // 2)).round()] if rest else []
    return distilled, checked


def build_context(start: torch.nn.Module, plan: Any, prep: Preprocessing, device: torch.device, *,
                  images: Sequence[Any] = (), limit: int = CONTEXT_SLICES, margin: int = MARGIN,
                  margin_share: float | None = None, cancel: Any = None) -> Context:
    """The start's prediction on the user's uncorrected slices and on ``images`` (other 2D images,
    unlabelled). Of each volume of ``plan``, up to ``limit`` / 2 slices far from the corrections (more than
    ``margin`` slices and ``margin_share`` of the depth, default :data:`MARGIN_SHARE`: a correction governs
    its neighbourhood) are distilled, and up to ``limit`` / 2 other slices more than ``margin`` from them
    are checked; the images are dealt alternately. ``start`` must take ``prep``'s input."""
    share = MARGIN_SHARE if margin_share is None else margin_share
    pairs, names, picks, roles = [], [], [], {}
    for i, (pair, zs) in enumerate(zip(plan.pairs, plan.slices)):
        if np.ndim(pair.labels) == 3:
            depth = int(np.shape(pair.labels)[0])
            distilled, checked = _volume_picks(depth, zs, limit, margin, max(margin, round(share * depth)))
            if distilled or checked:
                name = pair.name or f"pair{i}"
                pairs.append((pair.image, pair.labels))
                names.append(name)
                picks.append(sorted(distilled + checked))
                roles.update({f"{name}:z{z}": "distilled" for z in distilled})
    for j, image in enumerate(images):
        array = np.asarray(image)
        pairs.append((array, np.zeros(array.shape[:2], np.uint8)))
        names.append(f"image{j}")
        picks.append(None)
        roles[f"image{j}"] = "distilled" if j % 2 == 0 and len(images) > 1 else "checked"
    if not pairs:
        return Context(None, None)
    sources = sources_from_arrays(pairs, names=names, only_labelled=False)
    for src, zs in zip(sources, picks):
        if zs is not None:
            src.slices = zs
    data = build_slices(sources, prep, plan.class_names, cancel=cancel)
    data.labels = predict_labels(start, data, device)
    order = _z_order(data)
    distilled = [i for i in order if roles.get(data.names[i]) == "distilled"]
    checked = [i for i in order if roles.get(data.names[i]) != "distilled"]
    return Context(data.subset(distilled) if distilled else None, data.subset(checked) if checked else None)


def hold(start: torch.nn.Module, plan: Any, prep: Preprocessing, device: torch.device, keep: float,
         images: Sequence[Any] = (), start_name: str = "", cancel: Any = None) -> Generator[Log, None, Context]:
    """:func:`build_context` for a fine-tune from ``start`` (named ``start_name``), with a log line saying what
    holds the model near its start; nothing from a starting point (``llm4seg.models.STARTING_POINTS``),
    whose masks are nothing to keep."""
    from .models import STARTING_POINTS

    if start_name in STARTING_POINTS:
        yield Log(f"{start_name} is a starting point, not a segmenter: nothing of its masks is held")
        return Context(None, None)
    context = build_context(start, plan, prep, device, images=images, cancel=cancel)
    if context.distilled is not None and keep > 0:
        yield Log(f"holding the model near its start on {len(context.distilled)} of your other slices/images "
                  f"(the start's masks there train as {keep:.0%} of the samples)")
    return context


def _z_order(data: SliceSet) -> list[int]:
    """Slice indices ordered by source, then z (as names ``source:z12`` say), so that alternate picks interleave."""
    def key(i: int) -> tuple[int, int]:
        name = data.names[i]
        z = int(name.rsplit(":z", 1)[1]) if ":z" in name else 0
        return data.groups[i], z

    return sorted(range(len(data)), key=key)


def with_context(train: SliceSet, context: SliceSet | None, keep: float = KEEP) -> SliceSet:
    """``train`` plus the ``context`` slices, the corrected ones repeated so that about ``keep`` of the samples
    come from the context (``keep`` 0 or no context: ``train`` unchanged)."""
    if context is None or not len(context) or keep <= 0:
        return train
    repeat = max(1, round(len(context) * (1 - keep) / (keep * len(train))))
    base = train.subset([i for _ in range(repeat) for i in range(len(train))]) if repeat > 1 else train
    offset = len(base.source_names) or (max(base.groups) + 1)
    return SliceSet(torch.cat([base.images, context.images]), torch.cat([base.labels, context.labels.to(base.labels.dtype)]),
                    base.names + [f"context:{n}" for n in context.names],
                    base.groups + [offset + g for g in context.groups], list(base.class_names), base.prep,
                    list(base.source_names) + [f"context:{n}" for n in context.source_names])


def change_check(model: torch.nn.Module, checked: SliceSet, device: torch.device, ranges: int = 3) -> ChangeReport:
    """Segment the ``checked`` slices (labelled with the start's prediction) with ``model`` and compare:
    foreground pixels per class overall and in up to ``ranges`` consecutive slice ranges, and the agreement."""
    new = predict_labels(model, checked, device)
    old = checked.labels
    k = checked.num_classes
    order = _z_order(checked)

    def counts(idx: list[int]) -> tuple[list[int], list[int], float]:
        a, b = old[idx].long(), new[idx].long()
        s = [int((a == c).sum()) for c in range(1, k + 1)]
        n = [int((b == c).sum()) for c in range(1, k + 1)]
        inter = int(((a == b) & (a > 0)).sum())
        total = int((a > 0).sum() + (b > 0).sum())
        return s, n, (2 * inter / total if total else 1.0)

    start, now, agreement = counts(order)
    report = ChangeReport(list(checked.class_names), len(checked), start, now, agreement)
    if ranges > 1 and len(order) >= 2 * ranges:
        for block in np.array_split(np.array(order), ranges):
            idx = block.tolist()
            first, last = checked.names[idx[0]], checked.names[idx[-1]]
            s, n, a = counts(idx)
            report.ranges.append((_range_label(first, last), s, n, a))
    return report


def _range_label(first: str, last: str) -> str:
    if ":z" in first and first.rsplit(":z", 1)[0] == last.rsplit(":z", 1)[0]:
        return f"{first.rsplit(':z', 1)[0]} z {first.rsplit(':z', 1)[1]}-{last.rsplit(':z', 1)[1]}"
    return f"{first} … {last}"
