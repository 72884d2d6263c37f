"""Quick fine-tune speed: what each design choice costs per step, and the quick preset end to end.

    python benchmarks/bench_finetune.py [--checkpoint CKPT] [--json out.json] [--steps 100]

Data: 5 liver slices of ``../shared/data/ircad17`` (synthetic disks when it is missing) at 256², batch 4,
AdamW, no augmentation unless stated. Each variant runs a few steps through ``llm4seg.train.fit``; the per-step time is the median of
the steps after the first. The last row runs the real quick preset for ``--steps`` steps, caching included.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from llm4seg.events import Progress, run_to_end  # noqa: E402
from llm4seg.preprocess import Preprocessing  # noqa: E402
from llm4seg.train import TrainConfig, fit, from_arrays  # noqa: E402

IRCAD = ROOT.parent / "shared" / "data" / "ircad17"


def liver_slices(n: int = 6, size: int = 256):
    prep = Preprocessing(size=size, window=(40, 400))
    if (IRCAD / "ct.nii.gz").is_file():
        from llm4seg.io import read_image

        vol = read_image(IRCAD / "ct.nii.gz").array
        lab = (read_image(IRCAD / "labels.nii.gz").array == 1).astype(np.uint8)
        zs = np.flatnonzero(lab.reshape(lab.shape[0], -1).any(1))
        pick = zs[np.linspace(0, len(zs) - 1, n).round().astype(int)]
        keep = np.zeros_like(lab)
        keep[pick] = lab[pick]
        data = from_arrays([(vol, keep)], prep, ["background", "liver"], names=["ircad17"])
        source = f"ircad17 liver, slices {pick.tolist()}"
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from _factories import disk_image

        data = from_arrays([disk_image(512, 512, seed=i) for i in range(n)], prep)
        source = "synthetic disks"
    return data.subset(range(n - 1)), data.subset([n - 1]), source


def model_for(checkpoint: str | None):
    if checkpoint:
        from llm4seg.checkpoint import load_checkpoint

        return load_checkpoint(checkpoint, device="cpu")
    from llm4seg.model import ModelConfig, build_model

    return build_model(ModelConfig(), seed=0)


def timed_fit(model, train, val, cfg):
    """(median step seconds over steps 2.., seconds until the first step began, total seconds)."""
    stamps, t0 = [], time.perf_counter()

    def stamp(event) -> None:
        if isinstance(event, Progress) and event.phase == "training":
            stamps.append(time.perf_counter())

    run_to_end(fit(model, train, val, cfg), stamp)
    total = time.perf_counter() - t0
    first = stamps[0] - t0 - (stamps[1] - stamps[0] if len(stamps) > 1 else 0.0) if stamps else 0.0
    steps = np.diff(stamps)
    med = statistics.median(steps) if len(steps) else float("nan")
    return med, (first or 0.0), total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="start from this checkpoint (default: untrained model, real SmolLM2 layer)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--skip-slow", action="store_true", help="skip the full-model variant")
    args = ap.parse_args()
    train, val, source = liver_slices()
    base = model_for(args.checkpoint)
    state = {k: v.clone() for k, v in base.state_dict().items()}
    quick = TrainConfig.quick()
    variants = [
        ("A full model (encoder+LLM adapters+decoder), 256²", dict(train="all", cache_features=False, crop=None), 3),
        ("B decoder only, frozen encoder run each step, 256²", dict(train="decoder", cache_features=False, crop=None), 3),
        ("C decoder on cached features, 256²", dict(crop=None), 4),
        ("D decoder on cached features, 128² crops", dict(crop=128), 8),
        ("E = D + channels_last", dict(crop=128, channels_last=True), 8),
        ("D' decoder on cached features, 112² crops (the quick preset)", dict(crop=112), 8),
        ("F decoder on cached features, 96² crops", dict(crop=96), 8),
        ("G = D + flips/rot90 (4 cached versions per item)", dict(crop=128, augment=True), 8),
        ("H = D on 1 thread", dict(crop=128, num_threads=1), 8),
    ]
    if args.skip_slow:
        variants = variants[1:]
    rows = []
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.2f}, data: {source}")
    for name, over, steps in variants:
        base.load_state_dict(state)
        cfg = quick.replace(steps=steps, val_every=None, **over)
        threads = torch.get_num_threads()
        med, setup, total = timed_fit(base, train, None, cfg)
        torch.set_num_threads(threads)
        rows.append({"variant": name, "step_s": med, "setup_s": setup, "est_100_steps_s": setup + 100 * med})
        print(f"  {name}: {med:.3f} s/step, setup {setup:.1f} s", flush=True)
    base.load_state_dict(state)
    med, setup, total = timed_fit(base, train, val, quick.replace(steps=args.steps))
    rows.append({"variant": f"quick preset end to end ({args.steps} steps, val every 25)", "step_s": med,
                 "setup_s": setup, "total_s": total})
    print(f"\nload average now {os.getloadavg()[0]:.2f} (2 cores; other processes share them)\n")
    print("| variant | s/step (batch 4) | setup s | 100 steps s |")
    print("|---|---|---|---|")
    for r in rows:
        total_s = r.get("total_s", r.get("est_100_steps_s"))
        print(f"| {r['variant']} | {r['step_s']:.3f} | {r['setup_s']:.1f} | {total_s:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"source": source, "threads": torch.get_num_threads(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
