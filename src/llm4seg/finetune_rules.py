"""The fine-tuning rules that depend on what the user labelled: how many items are held out, and what trains
when a gray model meets colour images or when every item is a 2D image. Each is measured (docs/finetuning.md);
:func:`llm4seg.finetune.finetune` applies them."""
from __future__ import annotations

from typing import Any

import numpy as np

from .train import TrainConfig

__all__ = ["MIN_VAL_ITEMS", "NO_VALIDATION", "COLOUR_MIN_ITEMS", "validation_fraction", "colour_config",
           "learns_colour", "colour_size", "image_config"]

MIN_VAL_ITEMS = 50
NO_VALIDATION = (f"fewer than {MIN_VAL_ITEMS} labelled images/slices: all of them train and the last weights are "
                 "kept (a Dice measured on one or two held-out slices says more about those slices than about "
                 "the model)")


COLOUR_MIN_ITEMS = 3  # ISIC from the gray default, seed 0: whole network 0.303 / 0.611 / 0.785 at k = 1 / 3 / 5,
# the decoder alone 0.519 / 0.567 / 0.614 (one image is too few for the whole network)


def colour_config(config: TrainConfig) -> TrainConfig:
    """What trains when a 1-channel model has just been expanded to colour input: with ``learn_colour`` and a
    frozen encoder (``train="decoder"``), the whole network (no cached features or crops; flips + rot90)
    and no check against the start, else ``config`` unchanged (:func:`llm4seg.finetune.finetune` applies it from
    :data:`COLOUR_MIN_ITEMS` labelled images on). Steps and learning rate stay. Measured on 10
    ISIC dermoscopy images from the gray ``busi-lesion``, 3 seeds (docs/finetuning.md): Dice 0.645 ± 0.044
    with the decoder alone, 0.752 ± 0.035 with the whole network; the check kept the start in none of the
    seeds (its halves moved by −0.01 to +0.16) and tripled the time (96 s instead of about 30). From the
    256² ``busi-lesion``: 0.754 ± 0.022 in 211 s; on random 128² crops of the images (``crop=128``) 0.677 ±
    0.049 in 44 s, so whole images stay, scaled to ``config.colour_size`` (:func:`colour_size`)."""
    if not config.learn_colour or config.train != "decoder":
        return config
    return config.replace(train="all", cache_features=False, crop=None, augment=True, crosscheck=0)


def learns_colour(config: TrainConfig, items: int) -> bool:
    """Whether :func:`colour_config` changes ``config`` for a 1-channel model just expanded to colour input,
    with ``items`` labelled images (from :data:`COLOUR_MIN_ITEMS` on)."""
    return items >= COLOUR_MIN_ITEMS and colour_config(config) != config


def colour_size(config: TrainConfig, items: int, size: int) -> int:
    """The input side a gray model expanded to colour trains at (and the fine-tuned model segments at): the
    model's ``size``, or ``config.colour_size`` when the whole network learns colour (:func:`learns_colour`)
    and that is smaller."""
    if config.colour_size is None or not learns_colour(config, items):
        return size
    return min(size, config.colour_size)


def image_config(config: TrainConfig, plan: Any) -> TrainConfig:
    """With ``augment_images`` and only 2D images in ``plan`` (a :class:`llm4seg.finetune.PairPlan`; no
    volume), ``config`` with flips + rot90 on
    (cached in ``aug_versions`` symmetries with cached features); else ``config`` unchanged. Such images have no
    fixed side, and the fine-tuned model keeps the test-time flips of ``segment(tta="auto")``. Measured with
    *quick*, 10 frames, 3 seeds, eval sets of 100 (docs/finetuning.md): TG3K thyroid from the BUSI default
    0.569 ± 0.044 → 0.617 ± 0.008; CVC-ColonDB from ``polyp`` 0.659 ± 0.076 → 0.702 ± 0.000 (the check kept
    the start, flips included, in every seed); about 5 s more. Slices of volumes keep ``augment`` as set:
    anatomy has a side there (liver CT: no gain)."""
    if not config.augment_images or config.augment or any(np.ndim(p.labels) != 2 for p in plan.pairs):
        return config
    return config.replace(augment=True)


def validation_fraction(n_items: int, val_fraction: float | None) -> float:
    """The fraction of labelled items held out: ``val_fraction`` when given, else 0 below
    :data:`MIN_VAL_ITEMS` items (every item trains) and 0.2 from there on."""
    if val_fraction is not None:
        return val_fraction
    return 0.0 if n_items < MIN_VAL_ITEMS else 0.2
