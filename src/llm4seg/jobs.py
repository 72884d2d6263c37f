"""Segmentation as a job: the device asked for (the CPU when it is missing, said as a ``Log`` with topic
"fallback"; out of memory, :mod:`llm4seg.oom`'s policy inside ``iter_segment``), then post-processing. What
the napari widget runs in a worker thread and what ``llm4seg segment`` runs, so both fall back and clean up
the same way.

``segment_job`` is a generator of ``llm4seg.events`` (``Progress``, ``Log``) that returns a :class:`JobOutcome`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generator

import numpy as np
import torch

from .device import is_oom, resolve_device
from .events import Log, Progress, relay
from .infer import SegmentationResult, iter_segment
from .postprocess import PostprocessOptions, postprocess

__all__ = ["JobOutcome", "pick_device", "segment_job", "clean"]


@dataclass
class JobOutcome:
    """A finished segmentation: the raw result, the post-processed labels, the device used and any notes.

    ``result`` is None when the run was cancelled.
    """

    result: SegmentationResult | None
    labels: np.ndarray | None = None
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)


def pick_device(requested: str) -> tuple[torch.device, str | None]:
    """The device to use for ``requested`` and, when it is unavailable, a fallback note (then CPU)."""
    try:
        return resolve_device(requested), None
    except RuntimeError as exc:
        return torch.device("cpu"), f"{exc}. LLM4Seg falls back to the CPU (slower)."


def forward(job: Generator) -> Generator[Any, None, Any]:
    """Run a segmentation ``job`` inside a widget's or the CLI's job: its ``Progress`` and ``Log`` events
    pass, its result is returned (None when cancelled)."""
    return (yield from relay(job, keep=lambda e: isinstance(e, (Progress, Log))))


def clean(labels: np.ndarray, options: PostprocessOptions, z_range: tuple[int, int] | None) -> np.ndarray:
    """Post-process ``labels`` (only the slices of ``z_range`` for a volume run on a sub-range; each time point /
    channel of a 4D+ output on its own)."""
    if not options.active:
        return labels
    if labels.ndim > 3:
        out = np.empty_like(labels)
        for index in np.ndindex(*labels.shape[:-3]):
            out[index] = clean(labels[index], options, z_range)
        return out
    if labels.ndim == 2 or z_range is None:
        return postprocess(labels, options)
    out = labels.copy()
    out[z_range[0]:z_range[1]] = postprocess(labels[z_range[0]:z_range[1]], options)
    return out


def segment_job(
    image: Any,
    model: torch.nn.Module,
    *,
    device: str = "auto",
    options: PostprocessOptions | None = None,
    **kwargs: Any,
) -> Generator[Progress | Log, None, JobOutcome]:
    """Move ``model`` to ``device`` (CPU fallback if unavailable / out of memory), segment, post-process.

    ``kwargs`` go to :func:`llm4seg.infer.iter_segment` (``volume``, ``z_range``, ``window``, ``cancel`` ...).
    """
    options = options or PostprocessOptions()
    notes: list[str] = []
    dev, note = pick_device(device)
    try:
        model.to(dev)
    except RuntimeError as exc:  # the weights alone do not fit: the CPU
        if dev.type == "cpu" or not is_oom(exc):
            raise
        note, dev = f"{dev} ran out of memory loading the model; LLM4Seg runs on the CPU (slower)", torch.device("cpu")
        model.to(dev)
    if note:
        notes.append(note)
        yield Log(note, "warning", topic="fallback")

    def said(event: Any) -> bool:  # out-of-memory changes inside the run (llm4seg.oom) are kept as notes
        if isinstance(event, Log) and event.level == "warning":
            notes.append(event.text)
        return isinstance(event, (Progress, Log))

    result = yield from relay(iter_segment(np.asarray(image), model, **kwargs), keep=said)
    dev = next(model.parameters()).device
    if result is None:
        return JobOutcome(None, device=str(dev), notes=notes)
    labels = clean(result.labels, options, result.z_range)
    return JobOutcome(result, labels, device=str(dev), notes=notes)
