"""Pieces of the training loop: what trains, the optimiser, batch order, one step, validation."""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.utils.data import DistributedSampler

from ..preprocess import logits_to_labels
from .augment import Jitter, apply_dihedral, apply_jitter, random_dihedral, random_jitter
from .config import TrainConfig
from .data import SliceSet
from .distributed import DistContext, all_reduce_sum
from .features import FeatureCache
from .metrics import confusion_counts, scores
from .prompts import add_training_prompts

ENCODER = ("stem", "encoder1", "encoder2", "encoder3", "encoder4", "encoder5", "booster")


def frozen_modules(model: nn.Module, part: str) -> list[nn.Module]:
    """Modules kept frozen (eval mode, no gradients) besides the LLM layer, for ``train=part``."""
    if part == "all":
        return []
    return [m for name in ENCODER if (m := getattr(model, name, None)) is not None]


def select_trainable(model: nn.Module, part: str) -> tuple[list[str], list[nn.Parameter], dict[str, bool]]:
    """Set ``requires_grad`` for ``part``; return trainable names, parameters and the previous flags."""
    previous = {n: p.requires_grad for n, p in model.named_parameters()}
    frozen = {id(p) for m in frozen_modules(model, part) for p in m.parameters()}
    names, params = [], []
    for n, p in model.named_parameters():
        if n.startswith("booster.layer."):
            p.requires_grad_(False)  # the LLM layer never trains
            continue
        p.requires_grad_(id(p) not in frozen)
        if p.requires_grad:
            names.append(n)
            params.append(p)
    if not params:
        raise ValueError("nothing to train: every parameter is frozen")
    return names, params, previous


def set_modes(model: nn.Module, part: str) -> None:
    """Train mode for what trains; eval mode (fixed BatchNorm statistics) for the frozen parts."""
    model.train()
    for m in frozen_modules(model, part):
        m.eval()
    if getattr(model, "booster", None) is not None:
        model.booster.layer.eval()


def make_optimizer(config: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


class Net(nn.Module):
    """What DistributedDataParallel wraps: the full model, or (decoder training) the decoder on
    features computed without gradients (or taken from the cache)."""

    def __init__(self, model: nn.Module, part: str) -> None:
        super().__init__()
        self.model, self.part = model, part

    def forward(self, x: Any, x5: torch.Tensor | None = None) -> torch.Tensor:
        if x5 is not None:
            return self.model.decode(x, x5)
        if self.part == "all":
            return self.model(x)
        with torch.no_grad():
            skips, b = self.model.encode(x)
            b = self.model.boost(b)
        return self.model.decode(skips, b)


class BatchOrder:
    """Per-rank sample indices of every step: a stream of seeded epoch permutations, sharded like
    ``DistributedSampler``, cut into batches. A pure function of (seed, step): resumable exactly."""

    def __init__(self, n: int, batch: int, ctx: DistContext, seed: int) -> None:
        self.sampler = DistributedSampler(range(n), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                          seed=seed, drop_last=False)
        self.per_epoch = len(self.sampler)
        self.batch = batch
        self._cache: dict[int, list[int]] = {}

    def _epoch(self, e: int) -> list[int]:
        if e not in self._cache:
            self.sampler.set_epoch(e)
            self._cache = {e: list(iter(self.sampler))}
        return self._cache[e]

    def indices(self, step: int) -> torch.Tensor:
        out: list[int] = []
        pos = step * self.batch
        while len(out) < self.batch:
            e, off = divmod(pos + len(out), self.per_epoch)
            out += self._epoch(e)[off: off + self.batch - len(out)]
        return torch.tensor(out, dtype=torch.long)


def epoch_number(steps_done: int, steps_per_epoch: int) -> int:
    """The 1-based epoch in which step ``steps_done`` (a count, 1 = the first step) ends, counting epochs
    in steps as the schedule and ``val_every`` do: ``ceil(items / batch)`` steps each. (Batches run on
    across epoch boundaries, so the samples of an epoch's last step may already come from the next one.)"""
    return max(1, -(-steps_done // max(1, steps_per_epoch)))


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def _per_rank(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """This rank's share of values drawn for the global batch (sample j of rank r is r + world·j)."""
    return values[ctx.rank::ctx.world_size]


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def _draw_jitter(config: TrainConfig, data: SliceSet, glob: int, gen: torch.Generator,
                 ctx: DistContext) -> Jitter | None:
    """This rank's share of the jitter drawn for the global batch (``config.jitter``), or None when off."""
    if not config.jitter:
        return None
    drawn = random_jitter((glob, *data.images.shape[1:]), config.jitter, gen)
    return drawn.part(slice(ctx.rank, None, ctx.world_size))


def crop_batch(x: torch.Tensor, y: torch.Tensor, offsets: torch.Tensor, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``crop``² windows of images (B, C, H, W) and labels (B, H, W) at ``offsets`` (B, 2: top, left)."""
    boxes = [(int(t), int(u)) for t, u in offsets]
    return (torch.stack([xi[:, t:t + crop, u:u + crop] for xi, (t, u) in zip(x, boxes)]),
            torch.stack([yi[t:t + crop, u:u + crop] for yi, (t, u) in zip(y, boxes)]))


def train_step(net: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig,
               ctx: DistContext, step: int, idx: torch.Tensor, data: SliceSet,
               cache: FeatureCache | None, micro: int | None = None) -> float:
    """Forward and backward on the batch ``idx``; returns this rank's loss. The caller steps the optimiser
    (after checking that the loss is finite on every rank, so a diverged step never reaches the weights).

    ``micro``: run the batch in micro-batches of that many samples, accumulating gradients (the losses are
    per-sample means, so the gradient is the full batch's); the random choices are drawn for the whole
    batch first, so the step sees the same samples, versions and crops whatever ``micro`` is."""
    gen = step_generator(config.seed, step)
    b = len(idx)
    glob = b * ctx.world_size
    fmt = torch.channels_last if config.channels_last else torch.contiguous_format
    vers = offsets = ks = None
    crop = None
    if cache is not None:
        vers = _per_rank(torch.randint(0, cache.versions, (glob,), generator=gen), ctx)
        if not config.augment:
            vers = torch.zeros_like(vers)
        crop = config.crop if config.crop and config.crop < cache.size else None
        if crop:
            cells = (cache.size - crop) // 16 + 1
            offsets = _per_rank(torch.randint(0, cells, (glob, 2), generator=gen) * 16, ctx)
    elif config.augment:
        ks = _per_rank(random_dihedral(glob, data.images.shape[-1] == data.images.shape[-2], gen), ctx)
    jitter = _draw_jitter(config, data, glob, gen, ctx) if cache is None else None
    if cache is None and config.crop and config.crop < min(data.images.shape[-2:]):
        crop = config.crop
        room = torch.tensor(data.images.shape[-2:]) - crop + 1
        offsets = _per_rank((torch.rand(glob, 2, generator=gen) * room).long(), ctx)
    optimizer.zero_grad(set_to_none=True)
    micro = max(1, min(micro or b, b))
    total = 0.0
    for start in range(0, b, micro):
        part = slice(start, start + micro)
        if cache is not None:
            skips, x5, y = cache.batch(idx[part], vers[part], ctx.device, crop,
                                       offsets[part] if offsets is not None else None, config.channels_last)
            inputs: tuple = (skips, x5)
        else:
            x, y = data.batch(idx[part], ctx.device)
            if ks is not None:
                k = ks[part].to(x.device)
                x, y = apply_dihedral(x, k), apply_dihedral(y, k)
            if jitter is not None:
                x, y = apply_jitter(x, y, jitter.part(part), data.prep.mean, data.prep.std)
            if crop:
                x, y = crop_batch(x, y, offsets[part], crop)
            if config.prompts:
                x = add_training_prompts(getattr(net, "module", net).model, x, y, gen)
            inputs = (x.contiguous(memory_format=fmt),)
        with autocast(ctx.device):
            logits = net(*inputs)
        loss = loss_fn(logits.float(), y)
        if micro < b:
            loss = loss * (len(y) / b)
        loss.backward()
        total += float(loss.detach())
    if config.grad_clip:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], config.grad_clip)
    return total


@torch.no_grad()
def validate(model: nn.Module, data: SliceSet, ctx: DistContext, cache: FeatureCache | None = None,
             batch_size: int = 8, channels_last: bool = False) -> dict[str, float]:
    """Per-image mean IoU and Dice (mean over foreground classes) at the model's input size.

    Each rank scores its share of the slices; sums are all-reduced, so every rank gets the same numbers.
    """
    was = model.training
    model.eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    sums = torch.zeros(3, dtype=torch.float64)
    mine = torch.arange(ctx.rank, len(data), ctx.world_size)
    try:
        for start in range(0, len(mine), batch_size):
            idx = mine[start:start + batch_size]
            with torch.inference_mode(), autocast(ctx.device):
                if cache is not None:
                    skips, x5, y = cache.batch(idx, torch.zeros_like(idx), ctx.device, channels_last=channels_last)
                    logits = model.decode(skips, x5)
                else:
                    x, y = data.batch(idx, ctx.device)
                    logits = model(x.contiguous(memory_format=fmt))
            pred = logits_to_labels(logits.float())
            s = scores(confusion_counts(pred, y.to(torch.uint8), data.num_classes))
            sums += torch.tensor([s["iou"].mean(1).sum(), s["dice"].mean(1).sum(), len(idx)], dtype=torch.float64)
    finally:
        model.train(was)
    sums = all_reduce_sum(sums.to(ctx.device), ctx).cpu()
    n = max(1.0, float(sums[2]))
    return {"val_iou": float(sums[0]) / n, "val_dice": float(sums[1]) / n, "val_n": int(sums[2])}
