"""Evaluate a model on labelled data through the segmentation path users run (``llm4seg.infer``).

Predictions are made at each image's original size (resize to the model's size and back, exactly as
``llm4seg segment`` does) and scored per 2D slice against the original labels; see
``llm4seg.train.metrics`` for the per-image and pooled definitions. HD95 is in the file's spacing units
(mm for NIfTI/DICOM, pixels for plain images).
"""
from __future__ import annotations

from typing import Any, Generator, Sequence

import numpy as np

from ..events import Cancelled, Log, Progress, is_cancelled, relay
from ..infer import iter_segment
from .metrics import MetricAccumulator
from .sources import Source

__all__ = ["iter_evaluate", "evaluate"]


def iter_evaluate(
    model: Any,
    sources: Sequence[Source],
    class_names: Sequence[str],
    *,
    hd: bool = True,
    window: tuple[float, float] | None = None,
    batch_size: int | None = None,
    cancel: Any = None,
    tta: str | None = None,
) -> Generator[Progress | Log | Cancelled, None, dict[str, Any] | None]:
    """Segment every source (``tta``: test-time augmentation as in ``segment``) and score it; yields Progress
    per source and returns the metrics (None when cancelled)."""
    k = len(class_names) - 1
    found = 1 if model.config.num_classes == 1 else model.config.num_classes - 1
    if found != k:
        raise ValueError(
            f"the model predicts {found} class(es) but the data has {k} "
            f"({', '.join(class_names[1:])}): select the model's classes with --classes"
        )
    acc = MetricAccumulator(num_classes=k, class_names=class_names, hd=hd)
    yield Progress(0, len(sources), "evaluating", phase="evaluating")
    for i, src in enumerate(sources):
        if is_cancelled(cancel):
            yield Cancelled()
            return None
        image, labels = src.load()
        zs = src.slice_indices(labels)
        if not zs:
            continue
        z_range = (min(zs), max(zs) + 1) if src.volume else None
        result = yield from relay(iter_segment(image, model, volume=src.volume, z_range=z_range, window=window,
                                               batch_size=batch_size, cancel=cancel, tta=tta),
                                  keep=lambda e: isinstance(e, (Log, Cancelled)))
        if result is None:
            return None
        pred = result.labels[zs] if src.volume else result.labels
        truth = labels[zs] if src.volume else labels
        spacing = src.spacing[-2:] if src.spacing is not None and len(src.spacing) >= 2 else None
        acc.update(np.asarray(pred), np.asarray(truth).astype(np.uint8), spacing)
        yield Progress(i + 1, len(sources), src.name, phase="evaluating")
    return acc.compute()


def evaluate(model: Any, sources: Sequence[Source], class_names: Sequence[str], **kwargs: Any) -> dict[str, Any]:
    """Run :func:`iter_evaluate` to the end and return the metrics dictionary."""
    from ..events import run_to_end

    return run_to_end(iter_evaluate(model, sources, class_names, **kwargs))
