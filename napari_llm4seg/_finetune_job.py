"""What the Fine-tune widget runs in a worker thread (Qt-free): a snapshot of the labels, the job itself and
the words for its outcome."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Generator

import numpy as np

from llm4seg.anchor import KEEP
from llm4seg.events import CancelToken, Log
from llm4seg.finetune import FinetuneOutcome, TrainingPair, finetune, finetuned_card, summarise
from llm4seg.models import DEFAULT_NAME, GRAY_MODELS, find_entry
from llm4seg.train import NothingToLearn, TrainConfig

from . import _workers


def snapshot_labels(labels: Any) -> np.ndarray:
    """A copy of a label array (uint8 when the values fit): training reads it while the user may paint on."""
    copy_ = np.array(labels, copy=True)
    if copy_.dtype.itemsize > 1 and copy_.size and 0 <= copy_.min() and copy_.max() < 256:
        copy_ = copy_.astype(np.uint8)
    return copy_


def shipped_classes(name: str = DEFAULT_NAME) -> list[str] | None:
    """Classes of a shipped checkpoint (header only), or None when unknown until it is loaded."""
    from llm4seg.checkpoint import read_card

    entry = find_entry(name)
    try:
        return list(read_card(entry.path).classes) if entry is not None else None
    except (OSError, ValueError):
        return None


def start_hint(model_name: str, pairs: list[TrainingPair]) -> str:
    """Advice when an ultrasound model would start fine-tuning on gray volumes (MRI, CT): gray-start."""
    if model_name not in dict(GRAY_MODELS) or not any(np.ndim(p.labels) == 3 and not p.rgb for p in pairs):
        return ""
    return ("For MRI or CT volumes, the gray-start starting point usually fine-tunes better (choose it above; "
            "docs/finetuning.md).")


def _base_and_prep(base: Any, window: tuple[float, float] | None,
                   name: str = DEFAULT_NAME) -> Generator[Any, None, tuple[Any, Any]]:
    """The model (the shipped ``name`` loaded when ``base`` is None) and its preprocessing with the CT window
    chosen in the Segment widget."""
    if base is None:
        yield Log(f"loading the {name} checkpoint")
        base = _workers.load_job(name)
    prep = base.card.preprocess
    return base, (replace(prep, window=window) if window is not None else prep)


def finetune_job(base: Any, base_name: str, pairs: list[TrainingPair], z_range: tuple[int, int] | None,
                 config: TrainConfig, val_fraction: float | None, window: tuple[float, float] | None,
                 cancel: CancelToken, keep: float = KEEP) -> Generator[Any, None, FinetuneOutcome | None]:
    """Load the shipped ``base_name`` when there is no base, check the pairs against its classes, fine-tune a
    copy. ``outcome.seconds`` counts everything from the job's start (loading the model included)."""
    started = time.perf_counter()
    base, prep = yield from _base_and_prep(base, window, base_name)
    plan = summarise(pairs, base.card.classes, z_range=z_range)
    if not plan.ok:
        raise NothingToLearn(plan.reason())
    outcome = yield from finetune(base, plan, config, prep=prep, val_fraction=val_fraction, keep=keep, cancel=cancel)
    if outcome is not None:
        outcome.model.card = finetuned_card(outcome, base=base_name)
        outcome.seconds = time.perf_counter() - started
    return outcome


def outcome_text(outcome: FinetuneOutcome) -> tuple[str, str]:
    """(a line for the status bar, the result panel's text) of a run that made at least one step."""
    r = outcome.result
    metrics = ", ".join(f"{label} {r.metrics[key]:.3f}" for key, label in (("val_dice", "val Dice"),
                                                                            ("val_iou", "val IoU")) if key in r.metrics)
    kept = f"the best (step {r.best_step})" if r.best_step and outcome.config.select == "best" else "the last"
    what = {"done": "Fine-tuned", "cancelled": "Cancelled after", "failed": "Stopped after"}[r.status]
    n = outcome.train_items + outcome.val_items
    waited = max(outcome.seconds, r.seconds)
    text = (f"{what} {r.steps}/{r.total_steps} steps in {waited:.0f} s (training {r.seconds:.0f} s)"
            f"{'; ' + metrics if metrics else ''}.")
    held = (f"{outcome.val_items} held out (their Dice measures those {outcome.val_items} only)"
            if outcome.val_items else "none held out")
    info = (f"{text} Trained on {outcome.train_items} of {n} slice(s), {held}; {kept} weights are kept. "
            "The Segment widget keeps its model until 'Use now'.")
    if outcome.check is not None:
        info += f" Checked first: {outcome.check.describe()}."
    if outcome.change is not None:
        info += f" Afterwards, {outcome.change.describe()}."
        if outcome.change.notable and not outcome.drastic:
            info += " Look through the volume before you use it."
    if outcome.drastic:
        info = (f"Careful: {outcome.change.describe()}. That is rarely what a few corrections mean: the Segment "
                f"widget keeps the model you started from; 'Use anyway' hands the new one over. {text}")
    return text, info


BEYOND = 1  # slices beyond the labelled ones that the panel also lists, to look at (docs/finetuning.md)


def suggest_job(base: Any, pair: TrainingPair, window: tuple[float, float] | None, k: int = 5
                ) -> Generator[Any, None, list]:
    """Segment ``pair``'s image with probabilities and rank its unlabelled slices (those not in
    ``pair.slices``, or without labels) by uncertainty, then add the slices beyond the labelled ones where the
    model draws most (``llm4seg.suggest``). ``base`` None loads the default model."""
    from llm4seg.infer import iter_segment
    from llm4seg.suggest import beyond_labels, suggest_slices

    labels = np.asarray(pair.labels)
    if labels.ndim != 3:
        raise ValueError("suggestions need a volume or a stack of images: this pair holds one 2D image")
    base, prep = yield from _base_and_prep(base, window)
    result = yield from _workers.forward(iter_segment(pair.image, base, volume=True, prep=prep, return_probs=True))
    if result is None:
        return []
    labelled = (list(pair.slices) if pair.slices is not None  # a corrected output: its corrected slices
                else np.flatnonzero(labels.reshape(len(labels), -1).any(axis=1)).tolist())
    probs = result.probs if result.probs.ndim == 3 else result.probs.transpose(1, 0, 2, 3)  # (K, Z, ..) → (Z, K, ..)
    uncertain = suggest_slices(probs, labelled, k)
    return uncertain + beyond_labels(result.labels > 0, labelled, BEYOND)
