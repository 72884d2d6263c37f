"""Few-shot CT liver: label the liver in k slices, quick fine-tune, segment the whole volume, Dice elsewhere.

    python -m benchmarks.ct_fewshot [--checkpoint default] [--slices 1 5 10] [--steps 100] [--preset quick]
                                    [--val 0.2] [--augment]

Uses ``../shared/data/ircad17`` (3D-IRCADb-01 patient 17). The liver reference is the organ as a whole:
liver + tumour + the vessels enclosed by liver in their axial slice (as in ``sample_data``). The k labelled
slices are spread evenly over the liver's extent; Dice is computed over all *other* slices. ``--val`` is the
fraction of the labelled slices held out for validation (the Fine-tune widget's default 0.2 holds out one of
5; 0 trains on all of them and keeps the last weights).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from llm4seg.events import run_to_end
from llm4seg.finetune import TrainingPair, finetune, preset_config, summarise
from llm4seg.infer import segment
from llm4seg.io import read_image
from llm4seg.models import load_model
from llm4seg.postprocess import postprocess
from llm4seg.preprocess import WINDOWS, Preprocessing

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ircad17"


def liver_reference(labels: np.ndarray) -> np.ndarray:
    """Liver organ mask (Z, Y, X) from the IRCAD label map: liver, tumour and intrahepatic vessels."""
    base = np.isin(labels, (1, 2))
    filled = np.stack([ndi.binary_fill_holes(s) for s in base])
    return (base | (filled & np.isin(labels, (3, 4, 5)))).astype(np.uint8)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    inter = np.logical_and(pred, truth).sum()
    total = pred.sum() + truth.sum()
    return float(2 * inter / total) if total else 1.0


def pick_slices(liver: np.ndarray, k: int) -> list[int]:
    zs = np.flatnonzero(liver.any(axis=(1, 2)))
    return sorted({int(zs[int(round(q))]) for q in np.linspace(0.15 * (len(zs) - 1), 0.85 * (len(zs) - 1), k)})


def _clean(labels: np.ndarray) -> np.ndarray:
    """The Segment widget's "largest component + fill holes (3D)" post-processing."""
    return postprocess(labels, largest=True, fill_holes=True, mode="3d")


def run(checkpoint: str, ks: list[int], steps: int, window: str, preset: str = "quick",
        val: float = 0.2, augment: bool | None = None) -> list[dict]:
    ct = read_image(DATA / "ct.nii.gz").array
    liver = liver_reference(read_image(DATA / "labels.nii.gz").array)
    base = load_model(checkpoint, device="cpu")
    size = base.card.preprocess.size or 256
    prep = Preprocessing(size=size, channels=base.config.in_channels, window=WINDOWS[window])
    rows = []
    t = time.perf_counter()
    before = segment(ct, base, prep=prep).labels
    rows.append({"slices": 0, "train_s": 0.0, "dice_other": dice(before == 1, liver == 1),
                 "dice_other_post": dice(_clean(before) == 1, liver == 1), "segment_s": time.perf_counter() - t})
    for k in ks:
        chosen = pick_slices(liver, k)
        sparse = np.zeros_like(liver)
        sparse[chosen] = liver[chosen]
        plan = summarise([TrainingPair(ct, sparse, name="ircad17")], base.card.classes)
        t = time.perf_counter()
        extra = {} if augment is None else {"augment": augment}
        outcome = run_to_end(finetune(base, plan, preset_config(preset, steps=steps, **extra), prep=prep,
                                      val_fraction=val if k > 1 else 0.0))
        train_s = time.perf_counter() - t
        t = time.perf_counter()
        pred = segment(ct, outcome.model, prep=prep).labels
        seg_s = time.perf_counter() - t
        others = np.setdiff1d(np.arange(ct.shape[0]), chosen)
        rows.append({"slices": k, "z": chosen, "train_s": train_s, "segment_s": seg_s,
                     "dice_other": dice(pred[others] == 1, liver[others] == 1),
                     "dice_other_post": dice(_clean(pred)[others] == 1, liver[others] == 1)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="default")
    ap.add_argument("--slices", type=int, nargs="+", default=[1, 5, 10])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--window", default="abdomen", choices=sorted(WINDOWS))
    ap.add_argument("--preset", default="quick", choices=["quick", "thorough"])
    ap.add_argument("--val", type=float, default=0.2, help="validation fraction of the labelled slices (0.2)")
    ap.add_argument("--augment", action="store_true", default=None,
                    help="flips/rot90 augmentation on (default: as the preset says)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = ap.parse_args(argv)
    rows = run(args.checkpoint, args.slices, args.steps, args.window, args.preset, args.val, args.augment)
    print(f"\nCT liver few-shot ({args.checkpoint}, {args.preset} fine-tune {args.steps} steps, window {args.window}, "
          f"validation fraction {args.val}{', augmented' if args.augment else ''})\n")
    print("| labelled slices | fine-tune s | segment s | liver Dice on the other slices | "
          "+ largest component, fill holes (3D) |")
    print("|---|---|---|---|---|")
    for r in rows:
        label = "0 (no fine-tune)" if r["slices"] == 0 else f"{r['slices']} (z {r['z']})"
        print(f"| {label} | {r['train_s']:.1f} | {r['segment_s']:.1f} | {r['dice_other']:.4f} | "
              f"{r['dice_other_post']:.4f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
