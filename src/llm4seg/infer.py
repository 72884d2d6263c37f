"""Segmentation of 2D images and 3D volumes: batched slices, one code path for CLI, GUI and tests.

``iter_segment`` is a generator: it yields ``Progress`` after each batch of slices and returns the result
(or yields ``Cancelled()`` and returns None when the cancel token is set; checked between batches). Out of
memory, it follows :class:`llm4seg.oom.OomBackoff` (half the batch, down to one slice, then the CPU, where the
model stays), a warning ``Log`` at each change (topic "memory", or "fallback" when it moves to the CPU).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Generator

import numpy as np
import torch

from .device import is_oom, resolve_device
from .events import Cancelled, JobCancelled, Log, Progress, is_cancelled, relay, run_to_end
from .fastpath import fast_model
from .largeimage import block_mean, reduce_factor, upsample_into
from .oom import OomBackoff
from .preprocess import (
    Preprocessing, from_model_output, intensity_range, logits_to_labels, logits_to_probs, model_hw, to_model_input,
)

CPU_BATCH = 4

__all__ = ["SegmentationResult", "iter_segment", "segment", "image_layout", "resolve_device", "default_batch_size",
           "resolve_tta", "tta_option", "TTA_MODES", "TTA_OPTIONS"]


@dataclass
class SegmentationResult:
    """Labels (uint8, the input's spatial shape), optional probabilities, and how they were made."""

    labels: np.ndarray
    probs: np.ndarray | None
    classes: list[str]
    device: str
    seconds: float
    z_range: tuple[int, int] | None = None
    layout: str = "2d"
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage (setup/preprocess/model/postprocess)
    batch_size: int = 0
    notes: list[str] = field(default_factory=list)  # what was done differently and why (e.g. downscaling)
    tta: str | None = None  # the test-time augmentation used ("auto" resolved)


def image_layout(image: np.ndarray, volume: bool | None = None) -> str:
    """Classify an array: ``2d`` (H,W), ``2d-rgb`` (H,W,C), ``3d`` (Z,H,W) or ``3d-rgb`` (Z,H,W,C)."""
    nd, last = image.ndim, image.shape[-1] if image.ndim else 0
    if nd == 2:
        return "2d"
    if nd == 3:
        if volume is True or last not in (3, 4):
            return "3d"
        return "2d-rgb"
    if nd == 4 and last in (3, 4):
        return "3d-rgb"
    raise ValueError(
        f"cannot segment an array of shape {image.shape}: expected a 2D image (H, W), an RGB image (H, W, 3), "
        "a volume (Z, H, W) or an RGB stack (Z, H, W, 3). For time series or extra channels, pick one "
        "time point / channel first."
    )


def default_batch_size(device: torch.device, hw: tuple[int, int], channels: int = 1) -> int:
    """Slices per batch. CPU: 4 (larger batches do not pay there and keep cancel responsive).

    CUDA: from free memory, assuming ~220 float32 feature maps of the slice's model size per slice
    (measured peak of the fused network is lower; the OOM back-off in ``iter_segment`` covers the rest).
    """
    if device.type != "cuda":
        return CPU_BATCH
    free, _ = torch.cuda.mem_get_info(device)
    per_slice = hw[0] * hw[1] * 4 * 220 + hw[0] * hw[1] * 4 * (channels + 2)
    return int(max(1, min(256, 0.6 * free // per_slice)))


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def _write_labels(logits: torch.Tensor, out: np.ndarray) -> None:
    """Labels of (N, K, H, W) logits straight into the preallocated uint8 slab ``out`` (N, H, W)."""
    if logits.device.type == "cpu" and logits.shape[1] == 1:
        torch.gt(logits[:, 0], 0, out=torch.from_numpy(out).view(torch.bool))
        return
    torch.from_numpy(out).copy_(logits_to_labels(logits))


def iter_segment(
    image: np.ndarray,
    model: torch.nn.Module,
    *,
    volume: bool | None = None,
    z_range: tuple[int, int] | None = None,
    batch_size: int | None = None,
    window: tuple[float, float] | None = None,
    prep: Preprocessing | None = None,
    cancel: Any = None,
    return_probs: bool = False,
    fast: bool = True,
    tta: str | None = None,
) -> Generator[Progress | Log | Cancelled, None, SegmentationResult | None]:
    """Segment ``image`` with ``model``; see the module docstring for the event protocol.

    ``z_range`` (start, stop) limits a volume to those slices (the rest stays 0). ``window`` overrides the
    card's CT window (level, width). ``prep`` overrides the card's preprocessing. ``fast`` runs the fused
    inference copy of the network (``llm4seg.fastpath``; same logits within ~1e-5). ``tta``: test-time
    augmentation, ``"flips"`` (3 passes) or ``"d4"`` (the 8 symmetries of the square), probabilities averaged;
    ``"auto"``: flips when the model trained with flips + rot90 (:func:`resolve_tta`).
    """
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, got {tta!r}")
    started = time.perf_counter()
    image = np.asarray(image)
    layout = image_layout(image, volume)
    card = getattr(model, "card", None)
    tta = resolve_tta(tta, card)
    prep = prep or (card.preprocess if card is not None else Preprocessing(channels=model.config.in_channels))
    f = reduce_factor(image.shape[:2]) if layout.startswith("2d") else 1
    if f > 1:  # bounded memory: segment a block-mean reduced copy, write the mask back at full size
        lo, hi = intensity_range(image, prep, window)
        inner = iter_segment(block_mean(image, f), model, cancel=cancel, batch_size=batch_size, prep=prep,
                             window=((lo + hi) / 2.0, hi - lo), return_probs=return_probs, fast=fast, tta=tta)
        small = yield from relay(inner)
        return None if small is None else _full_size(small, image.shape[:2], f, started)
    classes = list(card.classes) if card is not None else ["background", "foreground"]
    stack = image[None] if layout.startswith("2d") else image
    n = stack.shape[0]
    z0, z1 = (0, n) if z_range is None or layout.startswith("2d") else (max(0, int(z_range[0])), min(n, int(z_range[1])))
    if z1 <= z0:
        raise ValueError(f"empty z-range {z_range} for a volume of {n} slices")
    hw = tuple(stack.shape[1:3])
    lo, hi = intensity_range(stack[z0:z1], prep, window)
    device = next(model.parameters()).device
    batch = batch_size or default_batch_size(device, model_hw(hw, prep), prep.channels)
    labels = np.zeros((n,) + hw, dtype=np.uint8)
    probs = None
    if return_probs:
        shape = (n,) + hw if model.config.num_classes == 1 else (model.config.num_classes, n) + hw
        probs = np.zeros(shape, dtype=np.float32)
    model.eval()
    net = fast_model(model) if fast else model
    timings = {"setup": time.perf_counter() - started, "preprocess": 0.0, "model": 0.0, "postprocess": 0.0}
    z, oom = z0, False
    policy = OomBackoff(batch, device, task="segmenting")
    if tta and (caution := tta_caution(card)):
        yield Log(caution, "warning", topic="tta")
    yield Progress(0, z1 - z0, "segmenting", phase="segmenting")
    while z < z1:
        if is_cancelled(cancel):
            yield Cancelled()
            return None
        stop = min(z1, z + batch)
        try:
            with torch.inference_mode(), _autocast(device):
                t0 = time.perf_counter()
                x = to_model_input(stack[z:stop], prep, lo, hi, device)
                t1 = time.perf_counter()
                out = tta_forward(net, x, tta)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t2 = time.perf_counter()
                logits = from_model_output(out, hw, prep)
                _write_labels(logits, labels[z:stop])
                if probs is not None:
                    p = logits_to_probs(logits).cpu().numpy()
                    if p.ndim == 3:
                        probs[z:stop] = p
                    else:
                        probs[:, z:stop] = p.transpose(1, 0, 2, 3)
                t3 = time.perf_counter()
        except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are retried
            if not is_oom(exc):
                raise
            oom = True
        if oom:  # outside the handler, so that the failed batch's tensors can be freed
            oom, x, out, logits = False, None, None, None
            moved = policy.back_off(model)
            batch = policy.batch
            if moved:
                device = policy.device
                net = fast_model(model) if fast else model
            yield Log(policy.message, "warning", topic="fallback" if moved else "memory")
            continue
        for key, dt in (("preprocess", t1 - t0), ("model", t2 - t1), ("postprocess", t3 - t2)):
            timings[key] += dt
        z = stop
        yield Progress(z - z0, z1 - z0, f"slice {z}/{z1}" if layout.startswith("3d") else "segmenting",
                       phase="segmenting")
    if layout.startswith("2d"):
        labels = labels[0]
        probs = probs[0] if probs is not None and probs.ndim == 3 else (probs[:, 0] if probs is not None else None)
    result = SegmentationResult(
        labels=labels,
        probs=probs,
        classes=classes,
        device=str(device),
        seconds=time.perf_counter() - started,
        z_range=None if layout.startswith("2d") else (z0, z1),
        layout=layout,
        timings=timings,
        batch_size=batch,
        tta=tta,
    )
    return result


TTA_MODES = (None, "flips", "d4", "auto")
TTA_OPTIONS = ("auto", "off", "flips", "d4")  # the command lines' --tta spellings ("off" is None)
#: (mirror left-right first, then quarter turns): "flips" is identity, left-right and up-down (= mirror + half turn)
_TRANSFORMS = {"flips": [(False, 0), (True, 0), (True, 2)],
               "d4": [(flip, k) for flip in (False, True) for k in range(4)]}


def _apply(x: torch.Tensor, flip: bool, k: int) -> torch.Tensor:
    return torch.rot90(x.flip(-1) if flip else x, k, (-2, -1)).contiguous()


def _undo(y: torch.Tensor, flip: bool, k: int) -> torch.Tensor:
    y = torch.rot90(y, -k, (-2, -1))
    return y.flip(-1) if flip else y


def tta_option(value: str) -> str | None:
    """The ``tta`` of a ``--tta`` option (:data:`TTA_OPTIONS`): ``"off"`` is None, the others as they are."""
    return None if value == "off" else value


def trained_with_flips(card: Any) -> bool | None:
    """Whether the weights of a model with this card trained with flips + rot90 (None: no record). A fine-tune
    that kept its starting weights (0 steps) answers for the starting model."""
    training = getattr(card, "training", None) or {}
    if training.get("kind") == "fine-tune" and training.get("steps") == 0:
        training = training.get("base_training") or {}
    augment = (training.get("config") or {}).get("augment")
    return None if augment is None else bool(augment)


def resolve_tta(tta: str | None, card: Any) -> str | None:
    """What ``tta`` means for a model with this card: ``"auto"`` is ``"flips"`` when the weights trained with
    flips + rot90 (every shipped model, a *thorough* fine-tune) and None otherwise (a *quick* fine-tune on
    cached features, which learns the orientation of its images, or a model with no training record)."""
    if tta != "auto":
        return tta
    return "flips" if trained_with_flips(card) else None


def tta_caution(card: Any) -> str:
    """Why test-time augmentation may hurt this model ("" when nothing is known against it): a fine-tune
    without flips or rotations (the *quick* preset) learns the orientation of its images, and averaging over
    mirrored copies then blurs anatomy that has a side (measured in docs/finetuning.md: CT liver Dice 0.885
    without, 0.704 with flips after a quick fine-tune on 5 slices)."""
    if trained_with_flips(card) is not False:
        return ""
    return ("this model was fine-tuned without flips or rotations: test-time augmentation can make its masks "
            "worse where anatomy has a side (CT, MRI); compare with Test-time aug. off")


def tta_forward(net: torch.nn.Module, x: torch.Tensor, tta: str | None = None) -> torch.Tensor:
    """``net(x)`` as float logits; with ``tta`` the probabilities averaged over flips / square symmetries,
    returned as logits again (sigmoid or softmax of the result gives the averaged probabilities)."""
    if tta is None:
        return net(x).float()
    total = None
    for flip, k in _TRANSFORMS[tta]:
        logits = _undo(net(_apply(x, flip, k)).float(), flip, k)
        p = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, 1)
        total = p if total is None else total + p
    mean = (total / len(_TRANSFORMS[tta])).clamp(1e-6, 1 - 1e-6)
    return torch.logit(mean) if mean.shape[1] == 1 else torch.log(mean)


def _full_size(small: SegmentationResult, hw: tuple[int, int], f: int, started: float) -> SegmentationResult:
    """A result computed on a ×f reduced image, brought back to the image's size (nearest neighbour)."""
    small.labels = upsample_into(small.labels, f, np.empty(hw, np.uint8))
    if small.probs is not None:
        p = small.probs
        small.probs = (upsample_into(p, f, np.empty(hw, np.float32)) if p.ndim == 2 else
                       np.stack([upsample_into(c, f, np.empty(hw, np.float32)) for c in p]))
    small.notes.append(f"image of {hw[1]}×{hw[0]} px downscaled ×{f} (block mean) for the network, "
                       "mask upsampled to full size")
    small.seconds = time.perf_counter() - started
    return small


def segment(image: np.ndarray, model: torch.nn.Module, progress=None, **kwargs: Any) -> SegmentationResult:
    """Run ``iter_segment`` to the end; ``progress(done, total)`` is called per batch. Raises JobCancelled."""

    def on_event(event: Any) -> None:
        if progress is not None and isinstance(event, Progress):
            progress(event.done, event.total)

    result = run_to_end(iter_segment(image, model, **kwargs), on_event)
    if result is None:
        raise JobCancelled("segmentation cancelled")
    return result
