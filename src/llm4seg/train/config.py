"""Training configuration and the two presets: the paper's full recipe and a quick fine-tune."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

__all__ = ["TrainConfig", "PRESETS"]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("poly", "constant", "cosine")
TRAIN_PARTS = ("all", "decoder")
SELECTIONS = ("best", "last")
PROMPT_MODES = ("clicks",)
PAPER_EPOCHS = 300


@dataclass
class TrainConfig:
    """How to train. Defaults are the paper's recipe (CMUNeXt / LLM4Seg): SGD lr 0.01, momentum 0.9,
    weight decay 1e-4, poly decay (power 0.9), flips + rot90, batch 8, best weights by validation IoU.

    ``steps`` wins over ``epochs``; with neither, the paper's 300 epochs. ``batch_size`` is per process
    (under torchrun the global batch is ``batch_size × world size``).

    ``train="decoder"`` freezes the encoder (eval mode, BatchNorm statistics fixed) and the LLM booster's
    adapters and trains the decoder and head only. Then ``cache_features`` computes the encoder and booster
    outputs once per training item (and per augmented version, ``aug_versions``) instead of every step, and
    ``crop`` trains the decoder on aligned crops (side in model pixels, a multiple of 16) of those cached
    full-image features: the features keep their full-image context and scale, the decoder's cost drops
    with the crop's area. Without cached features, ``crop`` trains the network on random crops of that side of
    the (augmented) input images: same scale, a fraction of the pixels.

    ``jitter`` > 0 adds, after the symmetries, a random rotation, zoom and shift and changes of gamma,
    contrast, brightness, colour balance and noise (:func:`llm4seg.train.augment.random_jitter`; 1 is its
    default range) to each training sample.

    ``select``: which weights a run returns — ``"best"`` by validation IoU, or ``"last"`` (validation is then
    only reported; fine-tuning uses it, since a held-out set of a few slices is too noisy to choose by).
    ``recalibrate_bn``: before training, re-estimate the BatchNorm statistics on the training images
    (``llm4seg.adapt.recalibrate_batchnorm``; fine-tuning also uses the unlabelled slices of the volumes).
    ``blend`` (fine-tuning): the weights returned are ``start + blend * (trained - start)``
    (``llm4seg.adapt.blend_weights``); 1 keeps the trained weights.
    ``crosscheck`` (fine-tuning): with k >= 2 folds, first check on the labelled items whether fine-tuning
    beats the start on items it did not train on (``llm4seg.crosscheck``), and keep the start when it does
    not; 0 trains without the check. ``crosscheck_images``: below ``llm4seg.crosscheck.MIN_ITEMS`` labelled
    items, the fewest separate 2D images the check runs on (with ``SMALL_FOLDS`` folds); volumes need MIN_ITEMS.
    ``learn_colour`` (fine-tuning): when a 1-channel model is expanded to take colour images and ``train`` is
    ``"decoder"``, the whole network trains instead (no cached features or crops; flips + rot90), since a
    frozen encoder cannot learn to use colour (:func:`llm4seg.finetune.colour_config`). ``colour_size``: then
    the input side it trains at, and the fine-tuned model segments at, when smaller than the model's (None: the
    model's own size).
    ``augment_images`` (fine-tuning): when every labelled item is a 2D image (no volume), flips + rot90 are on
    whatever ``augment`` says: such images have no fixed side, and the fine-tuned model keeps the test-time
    flips of ``segment(tta="auto")`` (:func:`llm4seg.finetune.image_config`).
    ``prompts="clicks"``: train a click-conditioned model with simulated clicks (:mod:`llm4seg.train.prompts`);
    a model without prompt channels gets them first, with zero weights (``llm4seg.adapt.add_prompt_channels``),
    so training starts exactly at the automatic model. Validation scores the automatic mode.
    """

    preset: str = "paper"
    epochs: int | None = None
    steps: int | None = None
    batch_size: int = 8
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "poly"
    poly_power: float = 0.9
    warmup_steps: int = 0
    augment: bool = True
    jitter: float = 0.0
    train: str = "all"
    cache_features: bool = False
    aug_versions: int = 4
    cache_budget_mb: int = 1024
    crop: int | None = None
    channels_last: bool = False
    grad_clip: float | None = None
    seed: int = 0
    device: str = "auto"
    val_every: int | None = None
    select: str = "best"
    recalibrate_bn: bool = False
    blend: float = 1.0
    crosscheck: int = 0
    crosscheck_images: int = 8
    learn_colour: bool = False
    augment_images: bool = False
    colour_size: int | None = None
    num_threads: int | None = None
    prompts: str | None = None

    def __post_init__(self) -> None:
        checks = (("optimizer", self.optimizer, OPTIMIZERS), ("schedule", self.schedule, SCHEDULES),
                  ("train", self.train, TRAIN_PARTS), ("select", self.select, SELECTIONS))
        for name, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if self.steps is not None and self.steps < 1 or self.epochs is not None and self.epochs < 1:
            raise ValueError("steps and epochs must be >= 1")
        if not 0.0 < self.blend <= 1.0:
            raise ValueError(f"blend must be in (0, 1], got {self.blend}")
        if self.crosscheck < 0 or self.crosscheck == 1:
            raise ValueError(f"crosscheck must be 0 (off) or a number of folds >= 2, got {self.crosscheck}")
        if self.lr <= 0:
            raise ValueError(f"learning rate must be > 0, got {self.lr}")
        if self.crop is not None and (self.crop < 16 or self.crop % 16):
            raise ValueError(f"crop must be a multiple of 16 (>= 16), got {self.crop}")
        if self.colour_size is not None and (self.colour_size < 32 or self.colour_size % 16):
            raise ValueError(f"colour_size must be a multiple of 16 (>= 32), got {self.colour_size}")
        if self.jitter < 0:
            raise ValueError(f"jitter must be >= 0 (0: off), got {self.jitter}")
        if self.jitter and self.cache_features:
            raise ValueError("jitter changes the images every step: it needs cache_features=False")
        if self.prompts is not None and self.prompts not in PROMPT_MODES:
            raise ValueError(f"prompts must be one of {PROMPT_MODES} or None, got {self.prompts!r}")
        if self.prompts and (self.cache_features or self.train != "all"):
            raise ValueError("prompts enter at the stem: training with clicks needs train='all' and no cached features")
        if self.cache_features and self.train != "decoder":
            raise ValueError("cache_features needs train='decoder' (a frozen encoder)")

    @classmethod
    def paper(cls, **overrides: Any) -> "TrainConfig":
        """The paper's full-training recipe."""
        return cls(**{"preset": "paper", **overrides})

    @classmethod
    def quick(cls, **overrides: Any) -> "TrainConfig":
        """Quick fine-tuning of a trained checkpoint on a few labelled slices, sized for about a minute on two
        CPU cores: AdamW 1e-3 (cosine, 5 warm-up steps), 100 steps, batch 4; decoder + head only, on encoder
        and booster features cached once per item; 112² crops of those features when the model's input is
        larger (measured on liver CT: as good as 128² crops, a quarter faster). Flips/rot90 are off for
        slices of volumes (``augment=True`` caches ``aug_versions`` symmetries per item): on liver CT slices
        they gave no gain within 100 steps and slowed the first steps; on 2D images they are on
        (``augment_images``; TG3K from the default, 10 frames, 3 seeds: 0.617 ± 0.008 instead of 0.569 ±
        0.044, with the test-time flips they allow; CVC-ColonDB from ``polyp``: 0.702 instead of 0.659).
        Measured again across modalities (``benchmarks.fewshot``, docs/finetuning.md): 11-16 s for 5-10 items at 128² on 2 CPU cores; training the whole network for 150
        steps (lr 1e-3 or 3e-4, flips + rot90) or re-estimating BatchNorm statistics first gave no better
        Dice in 3-4x the time. The last weights are kept (``select="last"``). First, a check on the labelled
        items (``crosscheck=2``, :mod:`llm4seg.crosscheck`: 2 folds from 8 items, 3 folds for 3-7 separate
        images, ``crosscheck_images``; none when the start scores below 0.2 Dice on them) keeps the start when
        fine-tuned copies segment held-out items worse (the generalist on ISIC or CVC-ColonDB frames; ``polyp``
        on 3-5 CVC-ColonDB frames: 0.759 kept where fine-tuning gave 0.66; docs/finetuning.md).
        ``learn_colour``: a gray model fine-tuned on colour images trains whole instead (ISIC, 10 images from
        the gray default, 3 seeds: Dice 0.752 ± 0.035 instead of 0.645 ± 0.044), at ``colour_size`` 128²: from the
        256² default 0.727 ± 0.030 in 38 s, at 256² 0.754 ± 0.022 in 211 s, at 160² 0.722 ± 0.057 and at 192²
        0.757 ± 0.046 in 59 and 100 s (docs/finetuning.md)."""
        base = dict(preset="quick", steps=100, batch_size=4, optimizer="adamw", lr=1e-3, weight_decay=1e-4,
                    schedule="cosine", warmup_steps=5, train="decoder", cache_features=True, augment=False,
                    aug_versions=4, crop=112, val_every=25, select="last", crosscheck=2, crosscheck_images=3,
                    learn_colour=True, augment_images=True, colour_size=128)
        return cls(**{**base, **overrides})

    @classmethod
    def thorough(cls, **overrides: Any) -> "TrainConfig":
        """Fine-tuning of the whole network except the frozen LLM layer, at the model's size: 120 AdamW steps (lr
        1e-3, cosine decay), about 4 minutes for 5-10 items at 256² on 2 CPU cores. From the 256² default, 3 seeds
        (docs/finetuning.md): 10 ISIC images 0.754 ± 0.022 (quick at 128²: 0.727 ± 0.030), 5 liver CT slices
        0.860 ± 0.012 (quick: 0.869 ± 0.015). The former 400 steps at lr 3e-4 took about 12 minutes at 256²."""
        base = dict(preset="thorough", steps=120, batch_size=4, optimizer="adamw", lr=1e-3, weight_decay=1e-4,
                    schedule="cosine", warmup_steps=10, train="all", augment=True, val_every=50, select="last")
        return cls(**{**base, **overrides})

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "TrainConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}: choose one of {sorted(PRESETS)}")
        return getattr(cls, PRESETS[name])(**overrides)

    def replace(self, **changes: Any) -> "TrainConfig":
        return replace(self, **changes)

    def steps_per_epoch(self, n_items: int, world_size: int = 1) -> int:
        per_rank = math.ceil(n_items / world_size)
        return max(1, math.ceil(per_rank / self.batch_size))

    def total_steps(self, n_items: int, world_size: int = 1) -> int:
        if self.steps is not None:
            return self.steps
        epochs = self.epochs if self.epochs is not None else PAPER_EPOCHS
        return epochs * self.steps_per_epoch(n_items, world_size)

    def lr_at(self, step: int, total: int) -> float:
        """Learning rate for step ``step`` (0-based) of ``total``: warm-up, then poly/cosine/constant."""
        if self.warmup_steps and step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return self.lr
        t = min(1.0, (step - self.warmup_steps) / max(1, total - self.warmup_steps))
        if self.schedule == "poly":
            return self.lr * (1.0 - t) ** self.poly_power
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * t))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


PRESETS = {"paper": "paper", "quick": "quick", "thorough": "thorough"}
