"""Cached encoder/booster features for decoder-only fine-tuning.

With the encoder and the LLM booster frozen (eval mode), their outputs for a training item never
change, so they are computed once (inference mode, batched) and kept as float16. Flips and rot90
are not exact through the encoder's convolutions and the booster's token order, so augmentation
happens *before* caching: each item is cached in ``versions`` symmetries (identity first), and a
training step picks one version per sample. Crops are taken at the same aligned window at every
decoder level (stride 1, 2, 4, 8 for the skips, 16 for the bottleneck).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generator

import torch

from ..device import is_oom
from ..events import Log, Progress, is_cancelled
from .augment import dihedral
from .data import SliceSet
from ..oom import OomBackoff

__all__ = ["FeatureCache", "build_feature_cache", "cache_bytes_per_item"]

STRIDES = (1, 2, 4, 8, 16)


@dataclass
class FeatureCache:
    """``skips[l]`` (N·V, C_l, S/2^l, S/2^l) and ``bottleneck`` (N·V, C_5, S/16, S/16) float16, ``labels``
    (N·V, S, S) uint8; entry ``i * versions + v`` is item ``i`` in symmetry ``symmetries[i, v]``."""

    skips: list[torch.Tensor]
    bottleneck: torch.Tensor
    labels: torch.Tensor
    versions: int
    symmetries: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.labels.shape[-1])

    def batch(self, items: torch.Tensor, versions: torch.Tensor, device: torch.device,
              crop: int | None = None, offsets: torch.Tensor | None = None,
              channels_last: bool = False) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Float32 features and int64 labels of (item, version) pairs, optionally cropped.

        ``offsets`` (B, 2): top-left corners in model pixels, multiples of 16, for windows of side ``crop``.
        """
        entry = items * self.versions + versions
        feats = [f[entry] for f in self.skips] + [self.bottleneck[entry]]
        labels = self.labels[entry]
        if crop is not None and crop < self.size:
            assert offsets is not None
            feats = [_crop(f, offsets // s, crop // s) for f, s in zip(feats, STRIDES)]
            labels = _crop(labels.unsqueeze(1), offsets, crop).squeeze(1)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        feats = [f.to(device, non_blocking=True).float().contiguous(memory_format=fmt) for f in feats]
        return feats[:4], feats[4], labels.to(device, non_blocking=True).long()


def _crop(x: torch.Tensor, offsets: torch.Tensor, side: int) -> torch.Tensor:
    return torch.stack([x[i, :, oy:oy + side, ox:ox + side] for i, (oy, ox) in enumerate(offsets.tolist())])


def cache_bytes_per_item(model: Any, size: int) -> int:
    """float16 bytes of one cached item (all skips + bottleneck + labels) at ``size``²."""
    dims = model.config.dims
    return sum(2 * c * (size // s) ** 2 for c, s in zip(dims, STRIDES)) + size * size


def build_feature_cache(
    model: Any,
    data: SliceSet,
    *,
    versions: int = 1,
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int = 8,
    cancel: Any = None,
    retry_oom: bool = True,
) -> Generator[Progress | Log, None, FeatureCache | None]:
    """Run the frozen encoder + booster over every item in ``versions`` symmetries; None if cancelled.

    Version 0 is the identity; the others are distinct random symmetries (seeded per item). Out of memory,
    the batch halves down to one item, then the rest is cached on the CPU (a warning ``Log`` each time; the
    model goes back to ``device`` afterwards); :class:`~llm4seg.oom.OutOfMemory` when nothing is left.
    ``retry_oom=False`` (several processes, which must stay in step) lets the error pass.
    """
    n, s = len(data), data.size
    versions = max(1, min(8 if data.images.shape[-1] == data.images.shape[-2] else 4, versions))
    gen = torch.Generator().manual_seed(seed + 7919)
    pool = torch.arange(1, 8) if data.images.shape[-1] == data.images.shape[-2] else torch.tensor([2, 5, 7])
    sym = torch.zeros((n, versions), dtype=torch.long)
    for i in range(n):
        sym[i, 1:] = pool[torch.randperm(len(pool), generator=gen)[: versions - 1]]
    flat = sym.flatten()
    item_of = torch.arange(n).repeat_interleave(versions)
    total = n * versions
    skips: list[torch.Tensor] | None = None
    bottleneck = labels = None
    was_training, home = model.training, torch.device(device)
    policy = OomBackoff(batch_size, home, task="caching")
    model.eval()
    start = 0
    try:
        while start < total:
            if is_cancelled(cancel):
                return None
            idx = torch.arange(start, min(total, start + policy.batch))
            try:
                feats, x5, y = _encode(model, data, item_of[idx], flat[idx], policy.device)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are retried
                if not (retry_oom and is_oom(exc)):
                    raise
                feats = None
            if feats is None:  # retried outside the handler, so that the failed batch's tensors can be freed
                policy.back_off(model)
                yield Log(policy.message, "warning", topic="memory")
                continue
            start = int(idx[-1]) + 1
            if skips is None:
                skips = [torch.empty((total,) + f.shape[1:], dtype=torch.float16) for f in feats]
                bottleneck = torch.empty((total,) + x5.shape[1:], dtype=torch.float16)
                labels = torch.empty((total, s, s), dtype=torch.uint8)
            for buf, f in zip(skips, feats):
                buf[idx] = f.to("cpu", torch.float16)
            bottleneck[idx] = x5.to("cpu", torch.float16)
            labels[idx] = y.to("cpu", torch.uint8)
            yield Progress(start, total, "caching features", phase="caching")
    finally:
        model.train(was_training)
        if policy.device != home:
            model.to(home)
    assert skips is not None and bottleneck is not None and labels is not None
    return FeatureCache(skips, bottleneck, labels, versions, sym)


def _encode(model: Any, data: SliceSet, items: torch.Tensor, symmetries: torch.Tensor,
            device: torch.device) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Skips, boosted bottleneck and labels of ``items`` in their symmetries, on ``device``."""
    x, y = data.batch(items, device)
    x = torch.stack([dihedral(x[j], int(k)) for j, k in enumerate(symmetries)])
    y = torch.stack([dihedral(y[j], int(k)) for j, k in enumerate(symmetries)])
    with torch.inference_mode():
        feats, x5 = model.encode(x)
        return feats, model.boost(x5), y
