"""Quick fine-tune (``TrainConfig.quick``: 100 steps, batch 4, 256² inputs) on the BUSI sample slices."""
from __future__ import annotations

import json
import sys
import time
from typing import Any

from .common import BUSI, Row, emit, peak_gpu_mb, peak_rss_mb, setup_worker


def available() -> str | None:
    """``None`` when the training module offers the quick fine-tune API, else why not."""
    try:
        from llm4seg.train import TrainConfig, fit, load_dataset, split  # noqa: F401
    except ImportError as exc:
        return f"llm4seg.train quick fine-tune API not available ({exc})"
    if not hasattr(TrainConfig, "quick"):
        return "llm4seg.train.TrainConfig has no quick preset"
    if not BUSI.is_dir():
        return f"{BUSI} not found"
    return None


def specs(quick: bool) -> list[dict[str, Any]]:
    return [{"suite": "finetune", "case": "quick", "steps": 10 if quick else 100}]


def run(spec: dict[str, Any]) -> list[Row]:
    import torch

    from llm4seg.events import run_to_end
    from llm4seg.models import untrained_default
    from llm4seg.preprocess import Preprocessing
    from llm4seg.train import TrainConfig, fit, load_dataset, split

    device = setup_worker(spec)
    data = load_dataset(BUSI, Preprocessing(size=256))
    train, val = split(data, 0.34, seed=0)
    model = untrained_default().to(device)
    config = TrainConfig.quick(steps=spec["steps"], device=str(device))
    t = time.perf_counter()
    result = run_to_end(fit(model, train, val, config))
    seconds = time.perf_counter() - t
    note = (f"{spec['steps']} steps × batch {config.batch_size}, train={config.train}, "
            f"crop {config.crop}, cached features={config.cache_features}; {len(train)} train / {len(val) if val else 0} val slices; "
            f"{seconds / spec['steps'] * 1000:.0f} ms/step incl. caching and validation")
    return [Row("fine-tune", f"TrainConfig.quick on BUSI sample, {spec['steps']} steps", seconds, seconds, seconds, 1,
                peak_rss_mb=peak_rss_mb(), peak_gpu_mb=peak_gpu_mb(), device=str(device),
                threads=torch.get_num_threads(), notes=note,
                extra={"steps": spec["steps"], "result": str(getattr(result, "status", ""))})]


if __name__ == "__main__":
    emit(run(json.loads(sys.argv[1])))
