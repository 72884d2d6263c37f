"""Fine-tuning a loaded model on a few labelled images or slices (what the napari Fine-tune widget runs).

Qt-free: the widget, scripts and tests use the same calls.

    pairs = [TrainingPair(image, labels, name="ct")]
    plan = summarise(pairs, model.card.classes)            # what it would train on, or why it can't
    config = preset_config("quick", steps=50)
    outcome = run_to_end(finetune(model, plan, config))     # a trained copy; ``model`` is unchanged
    save_checkpoint("mine.safetensors", outcome.model, finetuned_card(outcome, base="default"))

``finetune`` trains a *copy* of the model (the original stays usable while it runs) and never writes to
the label arrays it is given.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Generator, Sequence

import numpy as np
import torch

from .adapt import blend_weights, expand_to_rgb, recalibrate_batchnorm
from .anchor import KEEP, ChangeReport, change_check, hold, with_context
from .checkpoint import ModelCard
from .crosscheck import CheckResult, check_against_start
from .device import resolve_device
from .events import Log, is_cancelled, relay
from .finetune_rules import (
    COLOUR_MIN_ITEMS, MIN_VAL_ITEMS, NO_VALIDATION, colour_config, colour_size, image_config, learns_colour,
    validation_fraction,
)
from .preprocess import WINDOWS, Preprocessing, colour_is_gray, looks_like_ct
from .train import NothingToLearn, SliceSet, TrainConfig, TrainResult, build_slices, fit, sources_from_arrays, split

__all__ = ["TrainingPair", "PairPlan", "FinetuneOutcome", "PRESET_NAMES", "preset_config", "summarise",
           "prepare", "finetune", "finetuned_card", "NO_VALIDATION", "DEFAULT_SIZE", "MIN_VAL_ITEMS",
           "validation_fraction", "colour_config", "image_config"]

PRESET_NAMES = ("quick", "thorough")
NO_OBJECT = "the chosen slices contain no labelled object: paint at least one object of a class"
ERASED_ONLY = ("only erased slices: they train as background, and the rest of each volume, as the model segments "
               "it, keeps the object (Hold)")
DEFAULT_SIZE = 256  # training input size when the checkpoint segments at native size (size=None)


def preset_config(name: str, **overrides: Any) -> TrainConfig:
    """The fine-tuning presets of :class:`TrainConfig`: ``quick`` (about a minute on two CPU cores) and
    ``thorough`` (a few minutes)."""
    if name not in PRESET_NAMES:
        raise ValueError(f"unknown fine-tuning preset {name!r}: choose one of {PRESET_NAMES}")
    return TrainConfig.from_preset(name, **overrides)


@dataclass
class TrainingPair:
    """An image and its label map (0 = background, k = class k). ``rgb``: the image's last axis is colour.

    2D labels (H, W) pair with a 2D image; 3D labels (Z, H, W) with a volume, trained slice by slice.
    ``slices``: the slices of a volume that train, e.g. those the user corrected in a Segment output (its
    other slices are the model's own guesses); a listed slice left empty trains as all background (a false
    object erased teaches "nothing here"). None: the slices that contain labels."""

    image: Any
    labels: Any
    name: str = ""
    rgb: bool = False
    slices: Sequence[int] | None = None

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        shape = tuple(int(s) for s in np.shape(self.image))
        return shape[:-1] if self.rgb else shape


@dataclass
class PairPlan:
    """What fine-tuning would train on: the usable pairs and their slices, the pixels per class, and the
    problems that block it (empty when it can run) or notes about skipped pairs."""

    class_names: list[str]
    pairs: list[TrainingPair] = field(default_factory=list)
    slices: list[list[int]] = field(default_factory=list)    # z indices per usable pair ([0] for 2D)
    pixels: dict[str, int] = field(default_factory=dict)     # per class, over the used slices (native size)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    z_range: tuple[int, int] | None = None
    cleared: int = 0  # listed slices without any label (corrected to empty): all background

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.pairs)

    @property
    def n_slices(self) -> int:
        return sum(len(s) for s in self.slices)

    def describe(self) -> str:
        """One line: pairs, slices and pixels per class."""
        if not self.pairs:
            return "nothing to train on"
        fg = ", ".join(f"{name} {self.pixels.get(name, 0):,}" for name in self.class_names[1:])
        n, s = len(self.pairs), self.n_slices
        cleared = f" ({self.cleared} corrected to empty: background there)" if self.cleared else ""
        return f"{n} pair{'s' * (n != 1)}, {s} slice{'s' * (s != 1)}{cleared}; labelled pixels: {fg}"

    def reason(self) -> str:
        """Why nothing can be trained (empty when it can)."""
        if self.problems:
            return "; ".join(self.problems)
        if not self.pairs:
            return "no labelled image to learn from: paint labels in a Labels layer paired with an image"
        return ""


def summarise(pairs: Sequence[TrainingPair], class_names: Sequence[str] | None, *,
              z_range: tuple[int, int] | None = None) -> PairPlan:
    """Check ``pairs`` against the model's ``class_names`` and count what would be trained on.

    Volumes use the pair's ``slices`` (default: those that contain labels), or every slice of ``z_range``
    (start, stop exclusive) when given; 2D pairs without any label are skipped (noted). A pair with label values above the model's
    classes, a shape mismatch or non-integer labels is left out with a note naming the fix; it is a
    problem (blocking) only when no usable pair is left. ``class_names`` None (model not known yet) accepts any
    value and names them ``class k``. Reads the arrays only.
    """
    plan = PairPlan(list(class_names or []), z_range=z_range)
    n_fg = len(class_names) - 1 if class_names is not None else None
    total = np.zeros(1, dtype=np.int64)
    rejected: list[str] = []  # one reason per unusable pair
    if not pairs:
        plan.problems.append("no training pair: add an (image, labels) pair")
    for pair in pairs:
        labels = np.asarray(pair.labels)
        name = pair.name or "pair"
        if labels.dtype.kind not in "uib":
            rejected.append(f"{name}: labels must be integers, got {labels.dtype}")
            continue
        if tuple(labels.shape) != pair.spatial_shape:
            rejected.append(f"{name}: labels of shape {' × '.join(map(str, labels.shape))} do not match the "
                                 f"image's {' × '.join(map(str, pair.spatial_shape))}: pair the image with labels "
                                 "of its own shape (a Labels layer created for that image)")
            continue
        if labels.ndim not in (2, 3):
            rejected.append(f"{name}: {labels.ndim}D labels; fine-tuning takes 2D images or Z×H×W volumes")
            continue
        stack = labels if labels.ndim == 3 else labels[None]
        listed = labels.ndim == 3 and pair.slices is not None and z_range is None
        if z_range is not None and labels.ndim == 3:
            zs = list(range(max(0, z_range[0]), min(len(stack), z_range[1])))
        elif listed:
            zs = sorted({int(z) for z in pair.slices if 0 <= int(z) < len(stack)})
        else:
            zs = np.flatnonzero(stack.reshape(len(stack), -1).any(axis=1)).tolist()
        if not zs:
            plan.notes.append(f"{name}: no labels{' in the z-range' if z_range and labels.ndim == 3 else ''}, skipped")
            continue
        used = stack[zs]
        if used.dtype.kind == "i" and int(used.min()) < 0:
            rejected.append(f"{name}: negative label values; use 0 for background and 1.. for classes")
            continue
        counts = np.bincount(used.ravel().astype(np.int64, copy=False))
        if n_fg is not None and len(counts) > n_fg + 1 and counts[n_fg + 1:].any():
            found = [int(v) for v in np.flatnonzero(counts[n_fg + 1:]) + n_fg + 1]
            known = ", ".join(f"{i} = {c}" for i, c in enumerate(plan.class_names[1:], 1))
            rejected.append(f"{name}: label value{'s' * (len(found) > 1)} {', '.join(map(str, found[:5]))} "
                                 f"but the model knows {n_fg} class{'es' * (n_fg != 1)} ({known}): repaint those "
                                 f"pixels with the model's values (0 = background, {known}) or fine-tune a "
                                 f"model with {found[-1]} classes")
            continue
        if len(counts) > len(total):
            total = np.pad(total, (0, len(counts) - len(total)))
        total[:len(counts)] += counts
        plan.pairs.append(pair)
        plan.cleared += int((~stack[zs].reshape(len(zs), -1).any(axis=1)).sum()) if listed else 0
        plan.slices.append([int(z) for z in zs] if labels.ndim == 3 else [0])
    if plan.pairs:  # a bad pair never blocks the good ones: it is left out, and the plan says why
        plan.notes += [f"{reason} (this pair is left out)" for reason in rejected]
    else:
        plan.problems += rejected
    if class_names is None:
        plan.class_names = ["background"] + [f"class {k}" for k in range(1, max(2, len(total)))]
    total = np.pad(total, (0, max(0, len(plan.class_names) - len(total))))
    plan.pixels = {c: int(total[i]) for i, c in enumerate(plan.class_names)}
    if plan.pairs and not plan.problems and not total[1:].any():
        if plan.cleared and all(np.ndim(p.labels) == 3 and p.slices is not None for p in plan.pairs):
            plan.notes.append(ERASED_ONLY)  # the rest of each volume, held near the start, shows the object
        else:
            plan.problems.append(NO_OBJECT)
    return plan


@dataclass
class FinetuneOutcome:
    """A finished (or cancelled / stopped) fine-tuning: the trained copy, the loop's result and what it used."""

    result: TrainResult
    base_card: ModelCard | None
    pairs: int
    slices: int
    train_items: int
    val_items: int
    pixels: dict[str, int]
    config: TrainConfig
    check: CheckResult | None = None
    change: ChangeReport | None = None
    seconds: float = 0.0  # everything the caller waited for: preparing, the check, training, the change check

    @property
    def model(self) -> torch.nn.Module:
        return self.result.model

    @property
    def drastic(self) -> bool:
        """The change check found the mask changed drastically outside the corrections."""
        return self.change is not None and self.change.drastic

    @property
    def kept_start(self) -> bool:
        """The check on the labelled items (``TrainConfig.crosscheck``) kept the starting weights."""
        return self.check is not None and self.check.keep_start


def _slice_set(plan: PairPlan, prep: Preprocessing, cancel: Any = None, spread: int = 0) -> SliceSet:
    """The plan's slices as model input; ``spread`` > 0 adds up to that many evenly spaced (unlabelled) slices
    of each volume."""
    sources = sources_from_arrays([(p.image, p.labels) for p in plan.pairs],
                                  names=[p.name or f"pair{i}" for i, p in enumerate(plan.pairs)], only_labelled=False)
    for src, pair, zs in zip(sources, plan.pairs, plan.slices):
        if src.volume:  # exactly the slices the plan counted (and the spread ones)
            depth = int(np.shape(pair.labels)[0])
            extra = np.linspace(0, depth - 1, min(spread, depth)).round().astype(int).tolist() if spread else []
            src.slices = sorted(set(zs) | set(extra))
    return build_slices(sources, prep, plan.class_names, cancel=cancel)


def _adapt(model: torch.nn.Module, plan: PairPlan, prep: Preprocessing, data: SliceSet, config: TrainConfig,
           rgb: bool) -> Generator[Any, None, None]:
    """Colour input and BatchNorm statistics of the copy being trained (``prep``: as trained)."""
    if rgb:
        expand_to_rgb(model)
        yield Log("colour images: the 1-channel model now takes RGB (it starts from the same output as on gray)")
    if config.recalibrate_bn:
        volumes = any(np.ndim(p.labels) == 3 for p in plan.pairs)
        images = (_slice_set(plan, prep, spread=64) if volumes else data).images
        n = recalibrate_batchnorm(model, (images[i:i + 8].float() for i in range(0, len(images), 8)))
        yield Log(f"BatchNorm statistics re-estimated on {n} slice(s) of your images")


def prepare(model: torch.nn.Module, plan: PairPlan, config: TrainConfig, *, prep: Preprocessing | None = None,
            expand_rgb: bool = True, cancel: Any = None) -> Generator[Any, None, tuple[Any, SliceSet] | None]:
    """The copy of ``model`` that fine-tuning trains and the plan's slices as its input (see :func:`finetune`
    for ``prep`` and ``expand_rgb``); None when cancelled. The copy's preprocessing is ``data.prep``."""
    base_card = getattr(model, "card", None)
    if prep is None:
        prep = base_card.preprocess if base_card is not None else Preprocessing(channels=model.config.in_channels)
    if prep.size is None:
        prep = replace(prep, size=DEFAULT_SIZE)
    if prep.window is None and any(looks_like_ct(np.asarray(p.image)) for p in plan.pairs):
        prep = replace(prep, window=WINDOWS["abdomen"])  # HU data: a window, kept in the new card
        yield Log("CT in Hounsfield units: training in the abdomen window (level 40, width 400); choose another "
                  "CT window in the Segment widget before fine-tuning to change it")
    colour = [p for p in plan.pairs if p.rgb]
    rgb = expand_rgb and prep.channels == 1 and any(not colour_is_gray(p.image) for p in colour)
    if colour and prep.channels == 1 and not rgb and expand_rgb:
        yield Log("the colour images have equal red, green and blue (gray stored as colour): the model stays gray")
    if rgb:
        prep = replace(prep, channels=3, size=colour_size(config, len(plan.pairs), prep.size))
    yield Log(f"preparing {plan.describe()} at {prep.size}²")
    trained = copy.deepcopy(model)  # the caller's model stays as it is (and usable) while this one trains
    try:
        data = _slice_set(plan, prep, cancel)
        if is_cancelled(cancel):
            return None
        yield from _adapt(trained, plan, prep, data, config, rgb)
    except NothingToLearn:
        if is_cancelled(cancel):
            return None
        raise
    return trained, data


def finetune(
    model: torch.nn.Module,
    plan: PairPlan,
    config: TrainConfig,
    *,
    prep: Preprocessing | None = None,
    val_fraction: float | None = None,
    expand_rgb: bool = True,
    keep: float = KEEP,
    context: Sequence[Any] = (),
    cancel: Any = None,
) -> Generator[Any, None, FinetuneOutcome | None]:
    """Train a copy of ``model`` on ``plan`` (see :func:`summarise`); yields the events of
    :func:`llm4seg.train.fit` (plus ``Log`` lines) and returns the outcome, or None when cancelled before
    training started. ``prep`` defaults to the model card's preprocessing (at 256² when it has no size).

    Colour pairs turn a 1-channel model into an RGB one first (``expand_rgb``; exact at the start), and the
    preset may re-estimate BatchNorm statistics on the user's slices. ``val_fraction`` None holds out
    items only from :data:`MIN_VAL_ITEMS` labelled items on (see :func:`validation_fraction`); with the
    presets' ``select="last"`` the held-out Dice is reported, never used to pick weights.

    The user's other slices (of each volume, away from the corrected ones) and the unlabelled 2D images in
    ``context`` hold the model near the start: half of them, labelled with the start's prediction, train as
    a share ``keep`` of the samples (0: off), the other half is segmented by the start and the new model
    afterwards (:func:`llm4seg.anchor.change_check`, ``outcome.change``; ``outcome.drastic`` when the mask
    changed drastically there). Raises ``NothingToLearn`` when the plan has nothing usable."""
    if not plan.ok:
        raise NothingToLearn(plan.reason() or "nothing to learn from")
    started = time.perf_counter()
    base_card = getattr(model, "card", None)
    prepared = yield from prepare(model, plan, config, prep=prep, expand_rgb=expand_rgb, cancel=cancel)
    if prepared is None:
        return None
    trained, data = prepared
    sources = len(set(data.groups))  # items are sources, or slices of a single volume (as ``split`` counts them)
    expanded = trained.config.in_channels != model.config.in_channels
    if expanded and learns_colour(config, sources):
        config = colour_config(config)
        yield Log(f"a gray model on colour images: the whole network trains at {data.prep.size}² (with flips and "
                  "rotations), so that its first layers learn to use colour; no check against the start, which "
                  "never saw colour")
    elif (images := image_config(config, plan)) != config:
        config = images
        yield Log("2D images: training with flips and rotations too (they have no fixed side), so the Segment "
                  "widget's test-time flips stay on for the fine-tuned model")
    fraction = validation_fraction(sources if sources > 1 else len(data), val_fraction)
    train_set, val_set = split(data, fraction, seed=config.seed)
    said = val_set is None and val_fraction is None
    if said:
        yield Log(NO_VALIDATION, "warning" if len(data) < 2 else "info", topic="no-validation")
    check = None
    if config.crosscheck:
        check = yield from check_against_start(trained, train_set, config, cancel)
        if is_cancelled(cancel):
            return None
        if check is not None and check.keep_start:
            kept = TrainResult(model=trained, status="done", steps=0, total_steps=0, best_step=None, metrics={},
                               reason=check.describe())
            return FinetuneOutcome(kept, base_card, len(plan.pairs), plan.n_slices, len(train_set), 0,
                                   dict(plan.pixels), config, check, seconds=time.perf_counter() - started)
    anchor = yield from hold(trained, plan, data.prep, resolve_device(config.device), keep, context,
                             base_card.name if base_card is not None else "", cancel)
    if is_cancelled(cancel):
        return None
    if not bool(train_set.labels.any()) and (anchor.distilled is None or keep <= 0):
        raise NothingToLearn(f"{NO_OBJECT}, or keep Hold on so that the rest of the volume shows the object")
    if trained.config.prompts and config.train == "all" and not config.prompts:
        config = config.replace(prompts="clicks")  # a click model trained whole keeps learning the clicks
        yield Log("a click model: the whole network trains with simulated clicks too, so it keeps taking clicks")
    start = copy.deepcopy(trained) if config.blend < 1.0 else None
    events = fit(trained, with_context(train_set, anchor.distilled, keep), val_set, config, cancel)
    result = yield from relay(events, keep=lambda e: not (said and isinstance(e, Log) and e.topic == "no-validation"))
    if start is not None and result is not None and result.model is not None:
        blend_weights(start, result.model, config.blend)
        yield Log(f"weights blended: {config.blend:g} of the way from the start to the trained ones")
    change = None
    if anchor.checked is not None and result.status == "done" and result.steps:
        change = change_check(result.model, anchor.checked, resolve_device(config.device))
        yield Log(change.describe(), "warning" if change.drastic else "info", topic="change-check")
    return FinetuneOutcome(result, base_card, len(plan.pairs), plan.n_slices, len(train_set),
                           len(val_set) if val_set is not None else 0, dict(plan.pixels), config, check, change,
                           seconds=time.perf_counter() - started)


def finetuned_card(outcome: FinetuneOutcome, base: str = "", name: str | None = None) -> ModelCard:
    """A new card for the fine-tuned weights: the base card's classes/preprocessing as trained, with the
    provenance (base checkpoint, pairs, slices, steps, settings) in ``training`` and the validation
    metrics of the returned weights in ``metrics``."""
    trained = getattr(outcome.model, "card", None) or outcome.base_card or ModelCard()
    card = ModelCard(**copy.deepcopy(asdict(trained)))
    base_card = outcome.base_card
    base_name = base_card.name if base_card is not None else "llm4seg-model"
    card.name = name or f"{base_name.removesuffix('-finetuned')}-finetuned"  # not -finetuned-finetuned
    r = outcome.result
    card.description = (f"{base_name} fine-tuned on {outcome.pairs} labelled image(s)/volume(s), "
                        f"{outcome.slices} slice(s), {r.steps} step(s)")
    card.created = ""
    loss = r.history.get("loss") or []
    card.training = {
        "kind": "fine-tune",
        "base_checkpoint": base,
        "base_name": base_name,
        "base_training": dict(base_card.training) if base_card is not None else {},
        "pairs": outcome.pairs, "slices": outcome.slices,
        "train_items": outcome.train_items, "val_items": outcome.val_items,
        "pixels": dict(outcome.pixels),
        "preset": outcome.config.preset, "config": outcome.config.to_dict(),
        "steps": r.steps, "total_steps": r.total_steps, "best_step": r.best_step, "status": r.status,
        "seconds": round(r.seconds, 1), "torch": torch.__version__,
    }
    card.metrics = {k: v for k, v in r.metrics.items() if v is not None}
    if loss:
        card.metrics["final_train_loss"] = float(loss[-1][1])
    return card
