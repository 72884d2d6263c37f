"""From raw slices to model input and back: channels, CT windows, normalisation, resize/pad.

One code path for training and inference, so both see exactly the same numbers.
Intensities are mapped to [0, 1] (CT window, 8-bit range, or a robust percentile range computed
once per image/volume), then normalised with ``mean``/``std``; slices are resized to
``size``×``size`` (or padded to a multiple of 16 when ``size`` is None) and mapped back exactly.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

STRIDE = 16

#: CT window presets, (level, width) in Hounsfield units.
WINDOWS: dict[str, tuple[float, float]] = {
    "abdomen": (40.0, 400.0),
    "liver": (60.0, 160.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "mediastinum": (50.0, 350.0),
}

_LUMA = torch.tensor([0.299, 0.587, 0.114])


@dataclass
class Preprocessing:
    """How images are turned into model input; stored in every checkpoint's card."""

    size: int | None = 256
    channels: int = 1
    window: tuple[float, float] | None = None
    mean: float = 0.5
    std: float = 0.25
    percentiles: tuple[float, float] = (0.5, 99.5)

    def __post_init__(self) -> None:
        if self.window is not None:
            level, width = (float(v) for v in self.window)
            if width <= 0:
                raise ValueError(f"CT window width must be > 0, got {width}")
            self.window = (level, width)
        self.percentiles = tuple(self.percentiles)  # type: ignore[assignment]
        if self.size is not None and (self.size < STRIDE or self.size % STRIDE):
            raise ValueError(f"size must be a multiple of {STRIDE} (>= {STRIDE}), got {self.size}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["window"] = list(self.window) if self.window else None
        d["percentiles"] = list(self.percentiles)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def looks_like_ct(array: np.ndarray) -> bool:
    """Signed integers reaching below -500 (air in HU): a CT volume in Hounsfield units."""
    if array.dtype.kind != "i" or array.size == 0:
        return False
    sample = array.reshape(-1)[:: max(1, array.size // 1_000_000)]
    return int(sample.min()) < -500


def colour_is_gray(array: np.ndarray, *, tolerance: float = 0.01, allowed: float = 0.005) -> bool:
    """A colour image (channels last) whose red, green and blue agree: gray data stored as RGB(A), as many
    ultrasound and scanner exports are. Channels may differ by ``tolerance`` of the value range (compression),
    and on at most ``allowed`` of the pixels (coloured markers, calipers, text)."""
    arr = np.asarray(array)
    if arr.ndim < 3 or arr.shape[-1] not in (3, 4) or arr.size == 0:
        return False
    rgb = arr[..., :3].reshape(-1, 3)
    rgb = rgb[:: max(1, len(rgb) // 250_000)].astype(np.float32)
    span = float(rgb.max() - rgb.min()) or 1.0
    spread = rgb.max(axis=1) - rgb.min(axis=1)
    return float(np.mean(spread > tolerance * span)) <= allowed


def intensity_range(array: np.ndarray, prep: Preprocessing, window: tuple[float, float] | None = None) -> tuple[float, float]:
    """The (low, high) input values mapped to 0 and 1, computed once for a whole image or volume."""
    window = window if window is not None else prep.window
    if window is not None:
        level, width = window
        return level - width / 2.0, level + width / 2.0
    if array.dtype == np.uint8:
        return 0.0, 255.0
    if array.dtype == bool:
        return 0.0, 1.0
    step = max(1, array.size // 2_000_000)  # subsample large volumes: bounded memory and time
    sample = np.asarray(array).reshape(-1)[::step].astype(np.float32)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(sample, prep.percentiles)
    if not hi > lo:
        lo, hi = float(sample.min()), float(sample.max())
    if not hi > lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) float → (N, channels, H, W). RGB→luma for 1 channel; gray→RGB for 3."""
    if x.ndim == 3:
        x = x.unsqueeze(1)
    elif x.ndim == 4:
        c = x.shape[-1]
        if c == 4:  # RGBA: alpha carries no anatomy
            x = x[..., :3]
        elif c not in (1, 3):
            raise ValueError(f"expected 1, 3 or 4 channels in the last axis, got {c}")
        x = x.permute(0, 3, 1, 2)
    else:
        raise ValueError(f"expected slices (N, H, W) or (N, H, W, C), got shape {tuple(x.shape)}")
    if x.shape[1] == channels:
        return x
    if channels == 1:
        return (x * _LUMA.to(x).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return x.expand(-1, 3, -1, -1)


def normalise(x: torch.Tensor, lo: float, hi: float, prep: Preprocessing, *, finite: bool = False) -> torch.Tensor:
    """Map [lo, hi] to [0, 1] (clipped; NaN/inf → 0), then standardise with the card's mean/std.

    ``finite=True`` skips the NaN/inf pass (integer sources cannot hold them). Returns a new tensor.
    """
    if not finite:
        x = torch.nan_to_num(x, nan=lo, posinf=hi, neginf=lo)
    x = x.sub(lo).div_(hi - lo).clamp_(0.0, 1.0)
    return x.sub_(prep.mean).div_(prep.std)


def model_hw(hw: tuple[int, int], prep: Preprocessing) -> tuple[int, int]:
    """Spatial size fed to the network for a slice of size ``hw``."""
    if prep.size is not None:
        return prep.size, prep.size
    return tuple(-(-s // STRIDE) * STRIDE for s in hw)  # type: ignore[return-value]


def to_model_input(
    slices: np.ndarray | torch.Tensor,
    prep: Preprocessing,
    lo: float,
    hi: float,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Raw slices (N, H, W[, C]) → normalised (N, channels, h, w) float32 on ``device``."""
    x = torch.as_tensor(np.ascontiguousarray(slices)) if isinstance(slices, np.ndarray) else slices
    if x.dtype == torch.bool:
        x = x.to(torch.uint8)
    finite = not (x.is_floating_point() or x.is_complex())
    device = torch.device(device)
    if device.type == "cuda" and x.device.type == "cpu":
        x = x.pin_memory()  # raw dtype (int16 for CT) crosses the bus; the float work happens on the device
    x = x.to(device, non_blocking=True).float()
    x = normalise(to_channels(x, prep.channels), lo, hi, prep, finite=finite)
    h, w = x.shape[-2:]
    th, tw = model_hw((h, w), prep)
    if prep.size is not None:
        if (h, w) != (th, tw):
            x = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False, antialias=True)
    elif (h, w) != (th, tw):
        x = F.pad(x, (0, tw - w, 0, th - h), mode="replicate")
    return x


def from_model_output(logits: torch.Tensor, hw: tuple[int, int], prep: Preprocessing) -> torch.Tensor:
    """Logits at model size → logits at the slice's exact size (inverse resize, or crop of the padding)."""
    h, w = hw
    if prep.size is None:
        return logits[..., :h, :w]
    if tuple(logits.shape[-2:]) == (h, w):
        return logits
    return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)


def resize_labels(labels: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest-neighbour resize of integer label slices (N, H, W) to size×size (for training targets)."""
    if tuple(labels.shape[-2:]) == (size, size):
        return labels
    out = F.interpolate(labels.unsqueeze(1).float(), size=(size, size), mode="nearest-exact")
    return out.squeeze(1).to(labels.dtype)


def logits_to_labels(logits: torch.Tensor) -> torch.Tensor:
    """(N, K, H, W) logits → (N, H, W) uint8 labels: sigmoid > 0.5 for K == 1, argmax otherwise."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).to(torch.uint8)
    return logits.argmax(1).to(torch.uint8)


def logits_to_probs(logits: torch.Tensor) -> torch.Tensor:
    """(N, K, H, W) logits → foreground probability (K == 1) or per-class softmax."""
    return torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else torch.softmax(logits, 1)
