"""Training on a mixture of datasets: one binary task, several modalities, balanced per dataset.

Each :class:`Part` names a data folder (any layout ``find_sources`` understands), which items to take,
how its raw labels map to the one foreground class, and its own preprocessing window (CT) — so a
mixture of ultrasound, dermoscopy, endoscopy and CT slices becomes one :class:`SliceSet`. Balancing
repeats the items of small datasets (and subsamples none) so every dataset brings about the same number
of slices per epoch; validation keeps a seeded fraction of each dataset's *sources*, capped per dataset.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..preprocess import Preprocessing
from .data import SliceSet, build_slices, split
from .sources import find_sources

__all__ = ["Part", "load_mixture", "balance"]


@dataclass
class Part:
    """One dataset of a mixture.

    ``names``: keep only these source names (None = all); ``name_filter``: or a predicate on the names.
    ``classes``: the dataset's classes forming the foreground (``find_sources`` syntax, e.g. ``["liver=1+2"]``).
    ``window``: a CT window for this dataset only. ``z_range``: volumes, slices to use.
    """

    label: str
    root: str | Path
    classes: Sequence[str] | None = None
    names: Sequence[str] | None = None
    name_filter: Callable[[str], bool] | None = None
    window: tuple[float, float] | None = None
    z_range: tuple[int, int] | None = None
    val_fraction: float = 0.2
    val_cap: int | None = 100


def _load_part(part: Part, prep: Preprocessing) -> SliceSet:
    sources, class_names = find_sources(part.root, classes=part.classes, z_range=part.z_range)
    if part.names is not None:
        wanted = set(part.names)
        sources = [s for s in sources if s.name in wanted]
    if part.name_filter is not None:
        sources = [s for s in sources if part.name_filter(s.name)]
    if not sources:
        raise ValueError(f"{part.label}: no items left after the name selection")
    if len(class_names) != 2:
        raise ValueError(f"{part.label}: a mixture trains one foreground class; select it with classes=[...]")
    part_prep = dataclasses.replace(prep, window=part.window)
    data = build_slices(sources, part_prep, ["background", "foreground"])
    data.names = [f"{part.label}/{n}" for n in data.names]
    data.source_names = [f"{part.label}/{n}" for n in data.source_names]
    return data


def _concat(sets: Sequence[SliceSet], prep: Preprocessing) -> SliceSet:
    images = torch.cat([s.images for s in sets])
    labels = torch.cat([s.labels for s in sets])
    names: list[str] = []
    groups: list[int] = []
    source_names: list[str] = []
    for s in sets:
        groups += [g + len(source_names) for g in s.groups]
        names += s.names
        source_names += s.source_names
    return SliceSet(images, labels, names, groups, ["background", "foreground"], prep, source_names)


def balance(sets: Sequence[SliceSet], per_dataset: int, seed: int = 0) -> list[torch.Tensor]:
    """Indices into each set giving ``per_dataset`` slices each: whole repeats plus a seeded remainder."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for s in sets:
        n = len(s)
        reps, rest = divmod(per_dataset, n)
        idx = torch.arange(n).repeat(reps)
        out.append(torch.cat([idx, torch.randperm(n, generator=gen)[:rest]]))
    return out


def load_mixture(parts: Sequence[Part], prep: Preprocessing, *, per_dataset: int | None = None, seed: int = 0,
                 log: Callable[[str], None] = print) -> tuple[SliceSet, SliceSet]:
    """Training (balanced to ``per_dataset`` slices per dataset; default the largest dataset's size) and
    validation sets of a mixture."""
    trains, vals = [], []
    for part in parts:
        data = _load_part(part, prep)
        train, val = split(data, part.val_fraction, seed=seed)
        if val is not None and part.val_cap is not None and len(val) > part.val_cap:
            keep = torch.randperm(len(val), generator=torch.Generator().manual_seed(seed))[: part.val_cap]
            val = val.subset(sorted(keep.tolist()))
        log(f"{part.label}: {len(train)} training, {len(val) if val is not None else 0} validation slices")
        trains.append(train)
        if val is not None:
            vals.append(val)
    target = per_dataset or max(len(t) for t in trains)
    picked = [t.subset(i.tolist()) for t, i in zip(trains, balance(trains, target, seed))]
    return _concat(picked, prep), _concat(vals, prep)
