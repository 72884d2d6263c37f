"""Runs of ``scripts/paper_schedule.py``: what each run trains (``busi``, ``polyp:jitter=1``, ``busi:seed=1``)
and how several runs share one GPU (each on its own CUDA stream, their steps interleaved).
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass

import torch

from gpu_pack import TASKS


@dataclass(frozen=True)
class RunSpec:
    """One training run: a packed task, the jitter strength (0: the paper's flips + rot90 only), a seed."""

    task: str
    jitter: float = 0.0
    seed: int = 0

    @property
    def label(self) -> str:
        """As given on the command line, defaults left out: ``busi``, ``polyp:jitter=1``."""
        extra = [f"jitter={self.jitter:g}"] * bool(self.jitter) + [f"seed={self.seed}"] * bool(self.seed)
        return ":".join([self.task, *extra])

    @property
    def checkpoint(self) -> str:
        """The checkpoint's name: ``busi-lesion-paper``, ``polyp-paper-jitter1-s1``."""
        name = TASKS[self.task].val_list.split(".")[0] + "-paper"
        return name + f"-jitter{self.jitter:g}" * bool(self.jitter) + f"-s{self.seed}" * bool(self.seed)


def parse_run(text: str, seed: int = 0) -> RunSpec:
    """``task[:jitter=S][:seed=N]`` → a RunSpec (``seed`` when the text names none)."""
    task, *options = text.split(":")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r} in {text!r}; packed tasks: {', '.join(TASKS)}")
    values = {"jitter": 0.0, "seed": seed}
    for option in options:
        key, _, value = option.partition("=")
        if key not in values or not value:
            raise ValueError(f"{option!r} in {text!r}: options are jitter=STRENGTH and seed=N")
        values[key] = float(value) if key == "jitter" else int(value)
    if values["jitter"] < 0:
        raise ValueError(f"jitter must be >= 0 in {text!r}")
    return RunSpec(task, values["jitter"], values["seed"])


def streams_for(n: int, device: torch.device, concurrent: bool) -> list:
    """A CUDA stream per run when they run side by side on a GPU, else ``None`` (the current stream)."""
    if device.type != "cuda" or not concurrent or n < 2:
        return [None] * n
    current = torch.cuda.current_stream()
    streams = [torch.cuda.Stream() for _ in range(n)]
    for s in streams:
        s.wait_stream(current)  # the data and weights were made on the current stream
    return streams


def on_stream(stream) -> contextlib.AbstractContextManager:
    return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()


def interleave(runs: list[Generator], streams: list, on_done: Callable[[int, object], None]) -> None:
    """Advance every generator one step in turn, each on its stream, until all have returned; ``on_done(i,
    value)`` gets each one's return value as it finishes."""
    active = list(range(len(runs)))
    while active:
        for i in list(active):
            with on_stream(streams[i]):
                try:
                    next(runs[i])
                except StopIteration as stop:
                    active.remove(i)
                    on_done(i, stop.value)
    if any(s is not None for s in streams):
        torch.cuda.synchronize()


def time_rounds(steps: list[Callable[[], None]], streams: list, rounds: int, device: torch.device) -> float:
    """Seconds per round of one step of every run, the runs side by side on their streams."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):
        for step, stream in zip(steps, streams):
            with on_stream(stream):
                step()
    sync()
    t0 = time.perf_counter()
    for _ in range(rounds):
        for step, stream in zip(steps, streams):
            with on_stream(stream):
                step()
    sync()
    return (time.perf_counter() - t0) / rounds


def plan_epochs(per_epoch: list[int], s_per_step: list[float], budget_s: float, epochs: int,
                round_s: float | None = None) -> tuple[int, float]:
    """Epochs for every run (``per_epoch`` steps each): ``epochs`` if the whole schedule fits the budget, else
    scaled by one factor; and the seconds it needs. Runs one after another need the sum of their times; side
    by side (``round_s``: seconds per round of one step of each) at most the longest run's steps in rounds."""
    steps = [epochs * n for n in per_epoch]
    need = max(steps) * round_s if round_s else sum(n * s for n, s in zip(steps, s_per_step))
    factor = min(1.0, budget_s / need) if need > 0 else 1.0
    return max(1, int(epochs * factor)), need
