"""llm4seg: LLM4Seg segmentation (CMUNeXt + one frozen pre-trained LLM layer), Qt-free core library."""
from __future__ import annotations

__version__ = "0.1.0"

from .checkpoint import CheckpointError, ModelCard, load_checkpoint, read_card, save_checkpoint
from .infer import SegmentationResult, iter_segment, segment
from .model import LLM4Seg, ModelConfig, build_model
from .preprocess import WINDOWS, Preprocessing

__all__ = [
    "CheckpointError",
    "LLM4Seg",
    "ModelCard",
    "ModelConfig",
    "Preprocessing",
    "SegmentationResult",
    "WINDOWS",
    "build_model",
    "iter_segment",
    "load_checkpoint",
    "read_card",
    "save_checkpoint",
    "segment",
]
