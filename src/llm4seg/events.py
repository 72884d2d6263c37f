"""Typed events yielded by long jobs (segmentation, training) and a cooperative cancel token.

Long jobs are generators: they ``yield`` events and ``return`` their result. The CLI renders
the events, the GUI forwards them from a worker thread, tests iterate them directly.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Generator, TypeVar

T = TypeVar("T")


#: ``Progress.phase`` values: what the units are.
PHASES = ("", "caching", "training", "segmenting", "evaluating")
#: ``Log.topic`` values a GUI may act on (the text is for people, the topic for code).
TOPICS = ("", "fallback", "no-validation", "memory")


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
    "no-validation" (nothing held out), "memory" (smaller batches after running out of memory)."""

    text: str
    level: str = "info"
    topic: str = ""


@dataclass(frozen=True)
class Done:
    """The job finished; ``result`` is what it produced."""

    result: Any = None


@dataclass(frozen=True)
class Cancelled:
    """The job stopped on request; ``result`` holds what stays valid (e.g. last good weights)."""

    result: Any = None


@dataclass(frozen=True)
class Failed:
    """The job failed; ``reason`` says what went wrong and what to do."""

    reason: str


Event = Progress | Metric | Log | Done | Cancelled | Failed


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


def run_to_end(gen: Generator[Any, None, T], on_event=None) -> T:
    """Drive a job generator to completion, passing each event to ``on_event``; return its result."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)
