"""What the widgets run in worker threads: checkpoint loading, and segmentation with device fallback and
post-processing (``llm4seg.jobs``, shared with the command line).

The job functions are Qt-free (testable without a GUI); :func:`start` runs one in a napari worker thread.
"""
from __future__ import annotations

import functools
import gc
import inspect
from typing import Any, Callable, Generator

import numpy as np

from llm4seg.jobs import JobOutcome, clean, forward, pick_device, segment_job  # noqa: F401 - the widgets' jobs
from llm4seg.models import load_model
from llm4seg.postprocess import PostprocessOptions


def load_job(name_or_path: str) -> Any:
    """Load a checkpoint (registered name, ``default`` or a file) on the CPU; runs moves it to the device."""
    return load_model(name_or_path, device="cpu")


def load_named(name_or_path: str) -> tuple[str, Any]:
    """``(name_or_path, model)``, or ``(name_or_path, exception)`` when loading failed (never raises)."""
    try:
        return name_or_path, load_job(name_or_path)
    except Exception as exc:  # noqa: BLE001 - shown to the user as a notification
        return name_or_path, exc


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
