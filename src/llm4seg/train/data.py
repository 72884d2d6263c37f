"""Training sets held in memory as model-ready slices, and validation splits.

Every source is decoded once, turned into model input by ``llm4seg.preprocess`` (the same code the
segmentation path runs: intensity range per image/volume, CT window, normalisation, resize) and kept
as float16 (images) and uint8 (labels) tensors, so an epoch is only tensor indexing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..events import is_cancelled
from ..preprocess import Preprocessing, intensity_range, resize_labels, to_model_input
from .sources import Source, find_sources, sources_from_arrays

__all__ = ["SliceSet", "build_slices", "load_dataset", "from_arrays", "split"]

CHUNK = 16  # slices preprocessed at once (bounded memory for large volumes)


class NothingToLearn(ValueError):
    """The data has no usable labelled slice."""


@dataclass
class SliceSet:
    """Model-ready training slices: ``images`` (N, C, S, S) float16 normalised input, ``labels`` (N, S, S)
    uint8 class maps, a ``name`` and a source index (``groups``) per slice."""

    images: torch.Tensor
    labels: torch.Tensor
    names: list[str]
    groups: list[int]
    class_names: list[str]
    prep: Preprocessing
    source_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        """Foreground classes (1 = binary)."""
        return len(self.class_names) - 1

    @property
    def model_classes(self) -> int:
        """``ModelConfig.num_classes`` for this data: 1 (binary, sigmoid) or background + classes (softmax)."""
        return 1 if self.num_classes == 1 else self.num_classes + 1

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def subset(self, index: Sequence[int]) -> "SliceSet":
        idx = torch.as_tensor(list(index), dtype=torch.long)
        return SliceSet(self.images[idx], self.labels[idx], [self.names[i] for i in idx.tolist()],
                        [self.groups[i] for i in idx.tolist()], list(self.class_names), self.prep,
                        list(self.source_names))

    def batch(self, index: torch.Tensor, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 images and int64 labels of the slices ``index`` on ``device``."""
        x = self.images[index].to(device, non_blocking=True).float()
        y = self.labels[index].to(device, non_blocking=True).long()
        return x, y

    def pixel_counts(self) -> dict[str, int]:
        """Labelled pixels per class (background included), at the training size."""
        counts = torch.bincount(self.labels.flatten().long(), minlength=len(self.class_names))
        return {name: int(counts[i]) for i, name in enumerate(self.class_names)}

    def describe(self) -> str:
        fg = ", ".join(f"{k}: {v}" for k, v in list(self.pixel_counts().items())[1:])
        return f"{len(self)} slices from {len(set(self.groups))} source(s) at {self.size}² ({fg} pixels)"


def build_slices(
    sources: Sequence[Source],
    prep: Preprocessing,
    class_names: Sequence[str],
    *,
    cancel: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> SliceSet:
    """Decode and preprocess every source once; keep the selected slices in memory."""
    if prep.size is None:
        raise ValueError("training needs a fixed input size: set Preprocessing(size=...) (e.g. 256)")
    images, labels, names, groups = [], [], [], []
    num_classes = len(class_names) - 1
    for g, src in enumerate(sources):
        if is_cancelled(cancel):
            break
        image, lab = src.load()
        stack, lstack = (image, lab) if src.volume else (image[None], lab[None])
        zs = src.slice_indices(lab) if src.volume else [0]
        if not zs:
            continue
        top = int(lab.max()) if lab.size else 0
        if top > num_classes:
            raise ValueError(
                f"{src.name}: label value {top} but only {num_classes} class(es) {list(class_names[1:])}: "
                "select classes (e.g. --classes 1) or give all class names"
            )
        lo, hi = intensity_range(stack, prep)  # whole image/volume, as the segmentation path does
        for start in range(0, len(zs), CHUNK):
            z = zs[start:start + CHUNK]
            x = to_model_input(np.ascontiguousarray(stack[z]), prep, lo, hi)
            images.append(x.to(torch.float16))
            lt = torch.from_numpy(np.ascontiguousarray(lstack[z]).astype(np.uint8))
            labels.append(resize_labels(lt, prep.size))
        names += [f"{src.name}:z{z}" if src.volume else src.name for z in zs]
        groups += [g] * len(zs)
        if progress is not None:
            progress(g + 1, len(sources))
    if not images:
        raise NothingToLearn(
            "no labelled slices to train on: label at least one slice (or check the z-range / label files)"
        )
    return SliceSet(torch.cat(images), torch.cat(labels), names, groups, list(class_names), prep,
                    [s.name for s in sources])


def load_dataset(
    root: str | Path,
    prep: Preprocessing,
    *,
    list_file: str | Path | None = None,
    classes: Sequence[str] | None = None,
    only_labelled: bool = False,
    z_range: tuple[int, int] | None = None,
    cancel: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> SliceSet:
    """Find the pairs under ``root`` (see ``llm4seg.train.sources``) and cache them as a :class:`SliceSet`."""
    sources, class_names = find_sources(root, list_file=list_file, classes=classes,
                                        only_labelled=only_labelled, z_range=z_range)
    return build_slices(sources, prep, class_names, cancel=cancel, progress=progress)


def from_arrays(
    pairs: Sequence[tuple[Any, Any]],
    prep: Preprocessing,
    class_names: Sequence[str] | None = None,
    *,
    names: Sequence[str] | None = None,
    only_labelled: bool = True,
    z_range: tuple[int, int] | None = None,
) -> SliceSet:
    """A :class:`SliceSet` from in-memory (image, labels) pairs (2D images or volumes; see
    ``sources_from_arrays``). ``class_names`` defaults to background + ``class k`` up to the largest label."""
    sources = sources_from_arrays(pairs, names=names, only_labelled=only_labelled, z_range=z_range)
    if class_names is None:
        top = max((int(np.max(lab)) if np.size(lab) else 0) for _, lab in pairs) if pairs else 0
        class_names = ["background"] + (["foreground"] if top <= 1 else [f"class {k}" for k in range(1, top + 1)])
    return build_slices(sources, prep, class_names)


def split(
    data: SliceSet,
    val_fraction: float = 0.2,
    seed: int = 0,
    val_names: Sequence[str] | None = None,
) -> tuple[SliceSet, SliceSet | None]:
    """Training and validation sets.

    ``val_names`` (source names, e.g. from a list file) go to validation. Otherwise a seeded random
    ``val_fraction`` of the sources (of the slices when there is a single source) is held out; at least one
    item when the fraction is > 0 and there are two or more, and never all of them.
    """
    n = len(data)
    if val_names is not None:
        wanted = {str(v) for v in val_names}
        val_idx = [i for i in range(n) if data.source_names[data.groups[i]] in wanted or data.names[i] in wanted]
        if not val_idx:
            raise ValueError("none of the validation names matches a training item: check the --val-list file")
        train_idx = [i for i in range(n) if i not in set(val_idx)]
        if not train_idx:
            raise ValueError("every item is in the validation list: nothing left to train on")
        return data.subset(train_idx), data.subset(val_idx)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {val_fraction}")
    units = sorted(set(data.groups))
    by_group = len(units) >= 2
    if not by_group:
        units = list(range(n))
    if val_fraction == 0 or len(units) < 2:
        return data, None
    n_val = min(len(units) - 1, max(1, int(round(val_fraction * len(units)))))
    perm = torch.randperm(len(units), generator=torch.Generator().manual_seed(seed)).tolist()
    val_units = {units[i] for i in perm[:n_val]}
    in_val = [(data.groups[i] if by_group else i) in val_units for i in range(n)]
    return (data.subset([i for i in range(n) if not in_val[i]]),
            data.subset([i for i in range(n) if in_val[i]]))
