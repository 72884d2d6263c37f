"""What the widget runs in worker threads: checkpoint loading and segmentation with device fallback.

The job functions are Qt-free (testable without a GUI); :func:`start` runs one in a napari worker thread.
``segment_job`` is a generator of ``llm4seg.events`` (``Progress``, ``Log`` for device fallbacks) that
returns a :class:`JobOutcome`.
"""
from __future__ import annotations

import functools
import gc
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Generator

import numpy as np
import torch

from llm4seg.device import is_oom, resolve_device
from llm4seg.events import Cancelled, Done, Log, Progress
from llm4seg.infer import SegmentationResult, iter_segment
from llm4seg.models import load_model
from llm4seg.postprocess import PostprocessOptions, postprocess


@dataclass
class JobOutcome:
    """A finished segmentation: the raw result, the post-processed labels, the device used and any notes.

    ``result`` is None when the run was cancelled.
    """

    result: SegmentationResult | None
    labels: np.ndarray | None = None
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)


def load_job(name_or_path: str) -> Any:
    """Load a checkpoint (registered name, ``default`` or a file) on the CPU; runs moves it to the device."""
    return load_model(name_or_path, device="cpu")


def load_named(name_or_path: str) -> tuple[str, Any]:
    """``(name_or_path, model)``, or ``(name_or_path, exception)`` when loading failed (never raises)."""
    try:
        return name_or_path, load_job(name_or_path)
    except Exception as exc:  # noqa: BLE001 - shown to the user as a notification
        return name_or_path, exc


def pick_device(requested: str) -> tuple[torch.device, str | None]:
    """The device to use for ``requested`` and, when it is unavailable, a fallback note (then CPU)."""
    try:
        return resolve_device(requested), None
    except RuntimeError as exc:
        return torch.device("cpu"), f"{exc}. LLM4Seg falls back to the CPU (slower)."


def forward(events: Generator) -> Generator[Any, None, SegmentationResult | None]:
    """Pass ``Progress`` events on; return the result on ``Done`` or None on ``Cancelled``."""
    for event in events:
        if isinstance(event, Done):
            return event.result
        if isinstance(event, Cancelled):
            return None
        if isinstance(event, Progress):
            yield event
    return None


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
    if note:
        notes.append(note)
        yield Log(note, "warning", topic="fallback")
    image = np.asarray(image)
    try:
        model.to(dev)
        result = yield from forward(iter_segment(image, model, **kwargs))
    except RuntimeError as exc:
        if dev.type == "cpu" or not is_oom(exc):
            raise
        note = f"{dev} ran out of memory ({str(exc).splitlines()[0][:120]}); LLM4Seg retries on the CPU (slower)."
        notes.append(note)
        yield Log(note, "warning", topic="fallback")
        dev = torch.device("cpu")
        model.to(dev)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        result = yield from forward(iter_segment(image, model, **kwargs))
    if result is None:
        return JobOutcome(None, device=str(dev), notes=notes)
    labels = clean(result.labels, options, result.z_range)
    return JobOutcome(result, labels, device=str(dev), notes=notes)


def postprocess_job(raw: np.ndarray, options: PostprocessOptions, z_range: tuple[int, int] | None) -> np.ndarray:
    """Post-process a stored raw result (the preview of changed options)."""
    return clean(raw, options, z_range)


def freeze_gc() -> bool:
    """Keep the cyclic garbage collector off the objects that exist now, for the duration of a run.

    A full collection walks napari's whole object graph (0.5-1 s on a small CPU) while holding the GIL, so one
    triggered by the worker's allocations stalls the GUI. Frozen objects are skipped until :func:`unfreeze_gc`;
    new objects are still collected. Returns False (and does nothing) when something else already froze objects.
    """
    if gc.get_freeze_count():
        return False
    gc.freeze()
    return True


def unfreeze_gc(frozen: bool) -> None:
    """Undo :func:`freeze_gc` (when it froze anything)."""
    if frozen:
        gc.unfreeze()


class JobRuntimeError(Exception):
    """Carries a RuntimeError raised by a generator job past superqt (see :func:`start`)."""

    def __init__(self, original: RuntimeError) -> None:
        super().__init__(str(original))
        self.original = original


def _carry_runtime_errors(func: Callable) -> Callable:
    @functools.wraps(func)
    def job(*args: Any, **kwargs: Any) -> Generator:
        try:
            return (yield from func(*args, **kwargs))
        except RuntimeError as exc:
            raise JobRuntimeError(exc) from exc

    return job


def _unwrapped(handler: Callable) -> Callable:
    return lambda exc: handler(exc.original if isinstance(exc, JobRuntimeError) else exc)


def start(func: Callable, *args: Any, connect: dict[str, Callable | list[Callable]], **kwargs: Any) -> Any:
    """Run ``func(*args, **kwargs)`` in a napari worker thread; ``connect`` maps signal names to handlers
    (connected before the thread starts); return the worker.

    superqt's generator workers take a RuntimeError raised by the generator for a deleted worker: they emit
    neither ``errored`` nor ``finished`` (the caller would wait forever), and torch reports most failures as
    RuntimeError. Generator jobs therefore raise it wrapped, and ``errored`` handlers get the original.
    Function jobs drop their arguments once called (see :func:`_releasing`).
    """
    from napari.qt.threading import create_worker

    if not inspect.isgeneratorfunction(func):  # a generator's arguments go with its frame when it ends
        return create_worker(_releasing(func, args, kwargs), _connect=connect, _start_thread=True)
    errored = connect.get("errored")
    if errored is not None:
        handlers = errored if isinstance(errored, list) else [errored]
        connect = {**connect, "errored": [_unwrapped(h) for h in handlers]}
    return create_worker(_carry_runtime_errors(func), *args, _connect=connect, _start_thread=True, **kwargs)


def _releasing(func: Callable, args: tuple, kwargs: dict) -> Callable[[], Any]:
    """``func`` bound to its arguments, dropped once it is called: napari's task list keeps every worker (and
    a function worker's arguments, e.g. a whole label volume) alive as long as the window."""
    held = [args, kwargs]

    @functools.wraps(func)
    def call() -> Any:
        a, k = held
        held.clear()
        return func(*a, **k)

    return call
