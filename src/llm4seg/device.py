"""Device choice: cuda > mps > cpu, or what the user asks for, with a clear message when unavailable."""
from __future__ import annotations

import torch


def available_devices() -> list[str]:
    """Devices usable now, best first: ``cuda:N``…, ``mps``, ``cpu``."""
    devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices + ["cpu"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` → the best available device; otherwise check that the asked device exists."""
    if isinstance(device, torch.device):
        device = str(device)
    if device in (None, "", "auto"):
        return torch.device(available_devices()[0])
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} asked for, but CUDA is not available here: use 'cpu' or 'auto'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s) found"
            )
    elif dev.type == "mps" and "mps" not in available_devices():
        raise RuntimeError(f"device {device!r} asked for, but MPS is not available here: use 'cpu' or 'auto'")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise RuntimeError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps")
    return dev


def is_oom(exc: BaseException) -> bool:
    """True for an out-of-memory error of any device (CUDA, MPS or the CPU allocator)."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
