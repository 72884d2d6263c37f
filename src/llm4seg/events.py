"""Typed events yielded by long jobs (segmentation, training) and a cooperative cancel token.

Long jobs are generators: they ``yield`` events and ``return`` their result (the result arrives only as the
return value). Two drivers run them: :func:`run_to_end` runs a job to its end, passing each event to a
callback (the CLI renders them, the GUI's worker thread forwards them, tests collect them); :func:`relay` runs
a job inside another one, passing on the events the outer job wants.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, TypeVar

T = TypeVar("T")


#: ``Progress.phase`` values: what the units are.
PHASES = ("", "caching", "checking", "training", "segmenting", "evaluating")
#: ``Log.topic`` values a GUI may act on (the text is for people, the topic for code).
TOPICS = ("", "fallback", "no-validation", "memory", "kept-start", "tta")


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units of work finished; ``phase`` says which part of the job (see PHASES)."""

    done: int
    total: int
    message: str = ""
    phase: str = ""


@dataclass(frozen=True)
class Metric:
    """A scalar measured at a training step (``name`` e.g. "loss", "val_dice")."""

    step: int
    name: str
    value: float


@dataclass(frozen=True)
class Log:
    """A line of text for the user; ``level`` "warning" when the job changed course or lost something
    (e.g. no validation set, a smaller batch or the CPU after running out of memory): GUIs notify those.
    ``topic`` (see TOPICS) names what happened, for code: "fallback" (another device than asked),
    "no-validation" (nothing held out), "memory" (smaller batches after running out of memory), "kept-start"
    (fine-tuning kept the starting weights because they segmented held-out labelled items better), "tta"
    (test-time augmentation asked of a model fine-tuned without flips)."""

    text: str
    level: str = "info"
    topic: str = ""


@dataclass(frozen=True)
class Cancelled:
    """The job stopped on request; what stays valid (e.g. the last good weights) is its return value."""


@dataclass(frozen=True)
class Failed:
    """The job failed; ``reason`` says what went wrong and what to do."""

    reason: str


Event = Progress | Metric | Log | Cancelled | Failed


@dataclass
class CancelToken:
    """A thread-safe flag a job checks between units of work."""

    _event: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def __bool__(self) -> bool:  # ``if token:`` reads as "cancel requested"
        return self.cancelled


class JobCancelled(Exception):
    """Raised inside a job when its token is set; jobs turn it into a ``Cancelled`` result."""


def is_cancelled(cancel: Any) -> bool:
    """True when ``cancel`` (a CancelToken, threading.Event, callable or None) asks to stop."""
    if cancel is None:
        return False
    if isinstance(cancel, CancelToken):
        return cancel.cancelled
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    if callable(cancel):
        return bool(cancel())
    return bool(cancel)


def run_to_end(gen: Generator[Any, None, T], on_event: Callable[[Any], Any] | None = None) -> T:
    """Drive a job generator to completion, passing each event to ``on_event``; return its result."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)


def relay(gen: Generator[Any, None, T], keep: Callable[[Any], bool] | None = None,
          transform: Callable[[Any], Any] | None = None) -> Generator[Any, None, T]:
    """Run the job ``gen`` inside another job: yield the events ``keep`` accepts (all when None), as
    ``transform`` makes them (unchanged when None), and return ``gen``'s result. Closing the outer job closes
    ``gen``."""
    try:
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            if keep is None or keep(event):
                yield event if transform is None else transform(event)
    finally:
        gen.close()
