"""One out-of-memory policy for every job (training, feature caching, segmentation): halve the batch, then
move to the CPU.

After an out-of-memory error the job retries with half the batch (training keeps its effective batch by
accumulating gradients over micro-batches, so the step count and schedule stay as configured), down to one
item at a time. When even that fails on a GPU (or MPS), the job moves to the CPU, whose memory is separate
and usually larger, at the full batch again; when one item fails on the CPU, nothing is left to try.

    policy = OomBackoff(8, torch.device("cuda:0"), task="segmenting")
    policy.on_oom()   # (4, cuda:0), (2, cuda:0), (1, cuda:0), (8, cpu), (4, cpu), (2, cpu), (1, cpu), raises
"""
from __future__ import annotations

import torch

from .device import is_oom

__all__ = ["OomBackoff", "OutOfMemory", "is_oom", "TASKS"]

CPU = torch.device("cpu")
#: what a policy retries, and how its messages name the smaller unit of work and the way out
TASKS = {
    "training": ("retrying the step in micro-batches of {n} (gradients accumulated, so the batch stays {full})",
                 "train at a smaller input size (Preprocessing size), use the quick preset (decoder only), or free "
                 "memory"),
    "caching": ("caching features {n} item(s) at a time",
                "train at a smaller input size (Preprocessing size) or on fewer pairs, or free memory"),
    "segmenting": ("segmenting {n} slice(s) at a time",
                   "segment a smaller image or z-range, use a smaller model input size, or free memory"),
}


class OutOfMemory(RuntimeError):
    """Out of memory with one item per batch on the CPU: nothing smaller is left to try."""


class OomBackoff:
    """The back-off state of one job: the batch (``batch``) and the ``device`` to use now; ``task`` is a key of
    :data:`TASKS` (it only changes the messages)."""

    def __init__(self, batch: int, device: torch.device | str, task: str = "training") -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
        self.full = max(1, int(batch))
        self.batch = self.full
        self.device = torch.device(device)
        self.task = task
        self.message = ""
        self.retries = 0

    def on_oom(self) -> tuple[int, torch.device]:
        """After an out-of-memory error: the next (batch, device) to retry with, also said in ``message``.

        Raises :class:`OutOfMemory` when one item per batch on the CPU failed too. Frees the CUDA
        allocator's cached blocks first, so that the retry finds the memory the failed attempt held."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        where = str(self.device)
        smaller, way_out = TASKS[self.task]
        self.retries += 1
        if self.batch > 1:
            self.batch = max(1, self.batch // 2)
            self.message = f"out of memory on {where}: {smaller.format(n=self.batch, full=self.full)}"
        elif self.device.type != "cpu":
            self.batch, self.device = self.full, CPU
            self.message = (f"out of memory on {where} even one item at a time: falling back to the CPU (slower) "
                            f"with batch {self.full}")
        else:
            raise OutOfMemory(f"out of memory on {where} even one item at a time ({self.task}): {way_out}")
        return self.batch, self.device

    def back_off(self, model: torch.nn.Module) -> bool:
        """:meth:`on_oom`, then ``model`` moved to the new device when the policy changed device; True when it
        moved (a job then moves whatever else it holds on the old device)."""
        before = self.device
        self.on_oom()
        if self.device == before:
            return False
        model.to(self.device)
        return True
