"""The training loop: one generator of events for the CLI, the GUI and the tests.

``fit`` yields ``Progress``/``Metric``/``Log`` events (and a last ``Cancelled()``, or ``Failed(reason)`` when
the loss diverges or memory runs out even one item at a time on the CPU) and returns the
:class:`TrainResult`. Cancel is checked before and after each step's forward/backward (and
between batches while features are cached): a step during which cancel was asked for is dropped, so a
cancel during the first step leaves the model as it was and writes no file. The model is left holding the
best weights by validation IoU (the last weights when there is no validation set), never half a step.

Data that cannot train the model is refused before anything runs: ``NothingToLearn`` when no training label
is foreground, ``ValueError`` for label values above the model's classes or labels whose shape differs
from the images'. Out of memory, a step is retried in smaller micro-batches, then on the CPU
(:mod:`llm4seg.oom`), each change announced by a ``Log`` event.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator

import torch
from torch import nn

from ..device import is_oom
from ..events import Cancelled, Failed, Log, Metric, Progress, is_cancelled
from .config import TrainConfig
from .data import NothingToLearn, SliceSet
from .distributed import DistContext, all_reduce_sum, any_rank, setup
from .features import build_feature_cache, cache_bytes_per_item
from .losses import make_loss
from ..oom import OomBackoff, OutOfMemory
from .state import TrainState, restore, save_state, state_path_for
from .steps import BatchOrder, Net, epoch_number, make_optimizer, select_trainable, set_modes, train_step, validate

__all__ = ["fit", "TrainResult", "NO_VALIDATION_SET"]

FROZEN_PREFIX = "booster.layer."
NO_VALIDATION_SET = "no validation set: every step trains, and the last weights are kept (none is picked by IoU)"


@dataclass
class TrainResult:
    """The outcome of :func:`fit`. ``model`` holds the returned weights (best by validation IoU, else last)."""

    model: nn.Module = field(repr=False)
    status: str                      # "done" | "cancelled" | "failed"
    steps: int                       # optimiser steps completed (including resumed ones)
    total_steps: int
    best_step: int | None
    metrics: dict[str, float]        # validation metrics of the returned weights (empty without validation)
    history: dict[str, list[list[float]]] = field(default_factory=dict)   # name -> [[step, value], ...]
    checkpoint: Path | None = None
    state_file: Path | None = None
    seconds: float = 0.0
    reason: str = ""

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items() if not k.startswith(FROZEN_PREFIX)}


def _check_labels(data: SliceSet, role: str) -> None:
    """Labels of the images' size, with values the classes know."""
    n, _, h, w = data.images.shape
    if tuple(data.labels.shape) != (n, h, w):
        shape = " × ".join(map(str, data.labels.shape))
        raise ValueError(f"the {role} images ({n} × {h} × {w}) and labels ({shape}) "
                         "do not match: every image needs a label map of its own size; build the set with "
                         "from_arrays or build_slices")
    top = int(data.labels.max()) if data.labels.numel() else 0
    if top > data.num_classes:
        known = ", ".join(f"{i} = {c}" for i, c in enumerate(data.class_names[1:], 1))
        raise ValueError(f"label value {top} in the {role} data, but the model has {data.num_classes} class(es) "
                         f"({known}): relabel those pixels with the model's values (0 = background, {known}) "
                         f"or train a model with {top} classes")


def _check(model: nn.Module, data: SliceSet, val: SliceSet | None = None) -> None:
    if not len(data):
        raise NothingToLearn("the training set is empty: give at least one labelled image or slice")
    _check_labels(data, "training")
    if val is not None:
        _check_labels(val, "validation")
    if not bool(data.labels.any()):
        where = (" (the labelled ones are all in the validation set: lower the validation fraction)"
                 if val is not None and bool(val.labels.any()) else "")
        raise NothingToLearn(f"no labelled object in the {len(data)} training image(s)/slice(s), every label is 0 "
                             f"(background){where}: label at least one object of a class")
    cfg = model.config
    if cfg.num_classes != data.model_classes:
        found = 1 if cfg.num_classes == 1 else cfg.num_classes - 1
        raise ValueError(
            f"the model predicts {found} class(es) but the data has {data.num_classes} "
            f"({', '.join(data.class_names[1:])}): select matching classes, or start a new model for these classes"
        )
    if cfg.in_channels != data.images.shape[1]:
        raise ValueError(f"the model takes {cfg.in_channels} channel(s), the data has {data.images.shape[1]}: "
                         "preprocess with Preprocessing(channels=...) matching the model")


def _card(model: nn.Module, card: Any, data: SliceSet) -> Any:
    from ..checkpoint import ModelCard, default_card

    base = card if card is not None else getattr(model, "card", None)
    new = ModelCard(**asdict(base)) if base is not None else default_card(model)
    new.classes = list(data.class_names)
    new.preprocessing = data.prep.to_dict()
    return new


def fit(
    model: nn.Module,
    train_set: SliceSet,
    val_set: SliceSet | None = None,
    config: TrainConfig | None = None,
    cancel: Any = None,
    *,
    out: str | Path | None = None,
    card: Any = None,
    resume: TrainState | None = None,
    provenance: dict[str, Any] | None = None,
) -> Generator[Progress | Metric | Log | Cancelled | Failed, None, TrainResult]:
    """Train ``model`` in place on ``train_set``; see the module docstring for the event protocol.

    ``out``: checkpoint path, written atomically (best weights by validation IoU) with the training state
    next to it (``*.train-state.safetensors``) for ``resume``. ``card`` (default: the model's own) is the
    base of the new card; ``provenance`` is added to its ``training`` section.
    """
    config = config or TrainConfig()
    started = time.perf_counter()
    if val_set is not None and not len(val_set):
        val_set = None
    _check(model, train_set, val_set)
    ctx = setup(config.device)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    model.to(ctx.device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    if config.prompts and not model.config.prompts:
        from ..adapt import add_prompt_channels

        add_prompt_channels(model)
        model.to(ctx.device)
    names, params, previous = select_trainable(model, config.train)
    optimizer = make_optimizer(config, params)
    total = config.total_steps(len(train_set), ctx.world_size)
    loss_fn = make_loss(model.config.num_classes)
    order = BatchOrder(len(train_set), config.batch_size, ctx, config.seed)
    per_epoch = config.steps_per_epoch(len(train_set), ctx.world_size)
    val_every = config.val_every or per_epoch
    out = Path(out) if out is not None else None
    state_file = state_path_for(out) if out is not None else None
    history: dict[str, list[list[float]]] = {"loss": [], "lr": [], "val_iou": [], "val_dice": []}
    best: dict[str, Any] = {"val_iou": -math.inf, "step": None}
    best_weights: dict[str, torch.Tensor] | None = None
    step = 0
    if resume is not None:
        step, history, best = resume.step, {**history, **resume.history}, {**best, **resume.best}
        if best.get("val_iou") is None:
            best["val_iou"] = -math.inf
        if best.get("step") is not None and config.select == "best":
            best_weights = _snapshot(model)  # the checkpoint resumed from holds the best weights so far
        restore(resume, model, optimizer, names)
    new_card = _card(model, card, train_set)
    net: nn.Module = Net(model, config.train)
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    status, reason = "done", ""
    saved: Path | None = None
    policy = None if ctx.distributed else OomBackoff(config.batch_size, ctx.device)
    yield Log(f"training {len(names)} tensors ({sum(p.numel() for p in params):,} parameters, "
              f"{'decoder + head' if config.train == 'decoder' else 'all but the frozen LLM layer'}) on "
              f"{train_set.describe()}; {total} steps × batch {config.batch_size}"
              f"{f' × {ctx.world_size} processes' if ctx.distributed else ''} on {ctx.device}")
    if val_set is None:
        yield Log(NO_VALIDATION_SET, "warning", topic="no-validation")

    train_cache = val_cache = None
    try:
        if config.cache_features:
            versions = config.aug_versions if config.augment else 1
            per_item = cache_bytes_per_item(model, train_set.size)
            n_items = len(train_set) + (len(val_set) if val_set is not None else 0)
            versions = max(1, min(versions, int(config.cache_budget_mb * 2**20 // max(1, per_item * len(train_set)))))
            if per_item * n_items <= config.cache_budget_mb * 2**20:
                try:
                    train_cache = yield from build_feature_cache(model, train_set, versions=versions,
                                                                 seed=config.seed, device=ctx.device, cancel=cancel,
                                                                 retry_oom=policy is not None)
                    if val_set is not None and train_cache is not None:
                        val_cache = yield from build_feature_cache(model, val_set, versions=1, device=ctx.device,
                                                                   cancel=cancel, retry_oom=policy is not None)
                except OutOfMemory as exc:
                    status, reason = "failed", f"{exc}; the weights are unchanged"
                if train_cache is not None:
                    yield Log(f"cached encoder features of {len(train_set)} item(s) × {train_cache.versions} "
                              f"version(s) in {time.perf_counter() - started:.1f} s")
            else:
                yield Log("too many items to cache their features within the cache budget: computing them each step")
            if any_rank(is_cancelled(cancel), ctx):
                status = "cancelled"

        epoch_loss, epoch_n, epoch_start = 0.0, 0, time.perf_counter()
        while status == "done" and step < total:
            if any_rank(is_cancelled(cancel), ctx):
                status = "cancelled"
                break
            lr = config.lr_at(step, total)
            for g in optimizer.param_groups:
                g["lr"] = lr
            set_modes(model, config.train)
            undo = _undo_step(model, optimizer)
            idx = order.indices(step)
            try:
                loss = yield from _retry(lambda: train_step(net, loss_fn, optimizer, config, ctx, step, idx, train_set,
                                                            train_cache, micro=policy.batch if policy else None),
                                         policy, undo, model, optimizer, ctx)
            except OutOfMemory as exc:
                status, reason = "failed", f"{exc}; the last good weights are kept"
                break
            if any_rank(is_cancelled(cancel), ctx):  # asked during the step: drop it
                undo()
                status = "cancelled"
                break
            loss = float(all_reduce_sum(torch.tensor([loss], device=ctx.device), ctx).item()) / ctx.world_size
            if not math.isfinite(loss):
                undo()  # the BatchNorm statistics of the bad batch too
                status, reason = "failed", (f"the loss became {loss} at step {step + 1}: lower the learning rate "
                                            f"(now {config.lr:g}) or check the labels; the last good weights are kept")
                break
            optimizer.step()
            step += 1
            history["loss"].append([step, loss])
            history["lr"].append([step, lr])
            epoch_loss, epoch_n = epoch_loss + loss, epoch_n + 1
            yield Metric(step, "loss", loss)
            yield Metric(step, "lr", lr)
            yield Progress(step, total, f"step {step}/{total} loss {loss:.4f}", phase="training")
            if step % val_every == 0 or step == total:
                line = (f"step {step}/{total} (epoch {epoch_number(step, per_epoch)}): "
                        f"loss {epoch_loss / max(1, epoch_n):.4f}")
                if val_set is not None:
                    try:
                        m = yield from _retry(lambda: validate(model, val_set, ctx, val_cache, _val_batch(policy),
                                                               channels_last=config.channels_last),
                                              policy, lambda: None, model, optimizer, ctx)
                    except OutOfMemory as exc:
                        status, reason = "failed", f"{exc}; the last good weights are kept"
                        break
                    history["val_iou"].append([step, m["val_iou"]])
                    history["val_dice"].append([step, m["val_dice"]])
                    yield Metric(step, "val_iou", m["val_iou"])
                    yield Metric(step, "val_dice", m["val_dice"])
                    if config.select == "last" or m["val_iou"] > best["val_iou"]:
                        best = {**m, "step": step}
                        best_weights = _snapshot(model) if config.select == "best" else None
                        if out is not None and ctx.is_main:
                            saved = _save(out, model, new_card, config, train_set, val_set, best, step, total,
                                          started, provenance, ctx)
                    line += f", val IoU {m['val_iou']:.4f}, val Dice {m['val_dice']:.4f} (best IoU {best['val_iou']:.4f} at step {best['step']})"
                if out is not None and ctx.is_main:
                    save_state(state_file, model, optimizer, step=step, config=config.to_dict(), param_names=names,
                               best=_finite(best), history=history)
                yield Log(f"{line}, {time.perf_counter() - epoch_start:.1f} s")
                epoch_loss, epoch_n, epoch_start = 0.0, 0, time.perf_counter()
    except BaseException:
        ctx.close(sync=False)
        raise
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(previous.get(n, p.requires_grad))
        model.eval()

    if out is not None and ctx.is_main and step > 0:
        if status != "failed":
            save_state(state_file, model, optimizer, step=step, config=config.to_dict(), param_names=names,
                       best=_finite(best), history=history)
    if best_weights is not None:
        model.load_state_dict(best_weights, strict=False)
    if step > 0 and (val_set is None or best_weights is not None or config.select == "last"):
        # rewritten at the end so that the card records the whole run (steps, time), with the best weights
        written = _save(out if ctx.is_main else None, model, new_card, config, train_set, val_set, best, step,
                        total, started, provenance, ctx)
        saved = written or saved
    if step > 0:
        model.card = new_card
    metrics = {k: v for k, v in best.items() if k.startswith("val_")} if best["step"] is not None else {}
    result = TrainResult(model=model, status=status, steps=step, total_steps=total, best_step=best["step"],
                         metrics=metrics, history=history, checkpoint=saved,
                         state_file=state_file if out is not None and ctx.is_main and step > 0 else None,
                         seconds=time.perf_counter() - started, reason=reason)
    ctx.close()
    if status == "failed":
        yield Failed(reason)
    elif status == "cancelled":
        yield Log(f"cancelled after {step} step(s); keeping the {'best' if best_weights is not None else 'last'} weights" if step
                  else "cancelled before the first step ended: the weights are unchanged and no file is written")
        yield Cancelled()
    return result


def _undo_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """A function that drops a step not applied yet: its gradients and its BatchNorm statistics."""
    buffers = [(n, b.detach().clone()) for n, b in model.named_buffers() if not n.startswith(FROZEN_PREFIX)]

    def undo() -> None:
        optimizer.zero_grad(set_to_none=True)
        live = dict(model.named_buffers())
        with torch.no_grad():
            for n, saved in buffers:
                live[n].copy_(saved)

    return undo


def _val_batch(policy: OomBackoff | None) -> int:
    return 8 if policy is None or not policy.retries else min(8, policy.batch)


def _retry(attempt: Callable[[], Any], policy: OomBackoff | None, undo: Callable[[], None], model: nn.Module,
           optimizer: torch.optim.Optimizer, ctx: DistContext) -> Generator[Log, None, Any]:
    """``attempt()``, retried after out-of-memory errors as ``policy`` says (a ``Log`` event per change);
    raises :class:`OutOfMemory` when nothing is left to try. Without a policy (several processes) errors pass."""
    while True:
        try:
            return attempt()
        except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are retried
            if policy is None or not is_oom(exc):
                raise
        # outside the except block, so the failed attempt's tensors can be freed
        undo()
        if policy.back_off(model):
            for state in optimizer.state.values():
                for key, value in state.items():
                    if torch.is_tensor(value):
                        state[key] = value.to(policy.device)
            ctx.device = policy.device
        yield Log(policy.message, "warning", topic="memory")


def _finite(best: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in best.items()}


def _save(out: Path | None, model: nn.Module, card: Any, config: TrainConfig, train_set: SliceSet,
          val_set: SliceSet | None, best: dict[str, Any], step: int, total: int, started: float,
          provenance: dict[str, Any] | None, ctx: DistContext) -> Path | None:
    """Fill the card's provenance and metrics; write the checkpoint when ``out`` is given."""
    from ..checkpoint import save_checkpoint

    card.training = {
        **(provenance or {}),
        "preset": config.preset, "config": config.to_dict(), "steps": step, "total_steps": total,
        "best_step": best.get("step"), "train_items": len(train_set),
        "val_items": len(val_set) if val_set is not None else 0,
        "train_sources": len(set(train_set.groups)), "world_size": ctx.world_size, "device": str(ctx.device),
        "seconds": round(time.perf_counter() - started, 1), "torch": torch.__version__,
        "state_file": state_path_for(out).name if out is not None else None,
    }
    card.metrics = {k: v for k, v in _finite(best).items() if k.startswith("val_") and v is not None}
    if out is None:
        return None
    was = model.training
    model.eval()
    try:
        return save_checkpoint(out, model, card)
    finally:
        model.train(was)
