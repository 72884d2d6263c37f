"""What training does when the accelerator runs out of memory: smaller micro-batches, then the CPU.

A step that runs out of memory is retried in micro-batches of half the size (gradients accumulated, so
the effective batch, the step count and the schedule stay as configured), down to one sample at a time.
When even that fails on a GPU (or MPS), training moves to the CPU, whose memory is separate and usually
larger, at the configured batch again; when it fails there at one sample, nothing is left to try.

    policy = OomBackoff(8, torch.device("cuda:0"))
    policy.on_oom()   # (4, cuda:0), (2, cuda:0), (1, cuda:0), (8, cpu), (4, cpu), (2, cpu), (1, cpu), raises
"""
from __future__ import annotations

import torch

from ..device import is_oom

__all__ = ["OomBackoff", "OutOfMemory", "is_oom"]

CPU = torch.device("cpu")


class OutOfMemory(RuntimeError):
    """Out of memory with one sample per micro-batch on the CPU: nothing smaller is left to try."""


class OomBackoff:
    """The back-off state of one training run: the micro-batch (``batch``) and the ``device`` to use now."""

    def __init__(self, batch: int, device: torch.device | str) -> None:
        self.full = max(1, int(batch))
        self.batch = self.full
        self.device = torch.device(device)
        self.message = ""
        self.retries = 0

    def on_oom(self) -> tuple[int, torch.device]:
        """After an out-of-memory error: the next (micro-batch, device) to retry with, also in ``message``.

        Raises :class:`OutOfMemory` when one sample per micro-batch on the CPU failed too. Frees the CUDA
        allocator's cached blocks first, so that the retry finds the memory the failed attempt held."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        where = str(self.device)
        self.retries += 1
        if self.batch > 1:
            self.batch = max(1, self.batch // 2)
            self.message = (f"out of memory on {where}: retrying the step in micro-batches of {self.batch} "
                            f"(gradients accumulated, so the batch stays {self.full})")
        elif self.device.type != "cpu":
            self.batch, self.device = self.full, CPU
            self.message = (f"out of memory on {where} even one sample at a time: falling back to the CPU "
                            f"(slower) with batch {self.full}")
        else:
            raise OutOfMemory(f"out of memory on {where} even one sample at a time: train at a smaller input "
                              "size (Preprocessing size), use the quick preset (decoder only), or free memory")
        return self.batch, self.device
