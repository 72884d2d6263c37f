"""Training and fine-tuning: datasets, augmentation, losses, metrics, the training loop, DDP.

    data = load_dataset("busi/", Preprocessing(size=256))
    train, val = split(data, 0.2, seed=0)
    result = run_to_end(fit(model, train, val, TrainConfig.paper(epochs=50), out="busi.safetensors"))
"""
from __future__ import annotations

from .config import PRESETS, TrainConfig
from .data import NothingToLearn, SliceSet, build_slices, from_arrays, load_dataset, split
from .evaluation import evaluate, iter_evaluate
from .loop import TrainResult, fit
from .losses import BCEDiceLoss, CEDiceLoss, make_loss
from .metrics import MetricAccumulator, confusion_counts, evaluate_labels, hd95, scores
from .sources import Source, find_sources, parse_classes, sources_from_arrays
from .state import TrainState, load_state, save_state, state_path_for

__all__ = [
    "BCEDiceLoss", "CEDiceLoss", "MetricAccumulator", "NothingToLearn", "PRESETS", "SliceSet", "Source",
    "TrainConfig", "TrainResult", "TrainState", "build_slices", "confusion_counts", "evaluate", "evaluate_labels",
    "find_sources", "fit", "from_arrays", "hd95", "iter_evaluate", "load_dataset", "load_state", "make_loss", "parse_classes",
    "save_state", "scores", "sources_from_arrays", "split", "state_path_for",
]
