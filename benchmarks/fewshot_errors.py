"""Where a few-shot fine-tune goes wrong on a volume: false and missed voxels per slice.

    python -m benchmarks.fewshot_errors [--task liver] [--base gray-start] [--k 5] [--seed 0] [--top 12]

Labels k slices as ``benchmarks.fewshot`` does, fine-tunes with the quick preset, segments the volume and prints
the pooled Dice on the other slices, the false positives and misses inside the labelled z-range, beyond it and
on slices without the structure, and the slices with the most wrong voxels.
"""
from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from .fewshot import load_base, slice_errors
from .fewshot_suggest import _dice, _predict, _tune
from .fewshot_tasks import pick_slices, tasks


def error_table(pred: np.ndarray, mask: np.ndarray, labelled: list[int]) -> dict[str, dict[str, int]]:
    """False positives and misses (voxels) on the unlabelled slices: inside the labelled z-range, beyond it, and
    on the slices without the structure (``empty``, a part of the other two)."""
    z = np.arange(len(mask))
    others = ~np.isin(z, labelled)
    inside = (z >= min(labelled)) & (z <= max(labelled))
    empty = ~mask.astype(bool).reshape(len(mask), -1).any(axis=1)
    fp, fn = slice_errors(pred, mask)
    parts = {"inside": others & inside, "beyond": others & ~inside, "empty": others & empty}
    return {name: {"fp": int(fp[sel].sum()), "fn": int(fn[sel].sum())} for name, sel in parts.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="liver")
    ap.add_argument("--base", default="gray-start")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    volumes = tasks()[args.task].volumes()
    name, image, mask, window = volumes[args.seed % len(volumes)]
    base = load_base(args.base, False)
    chosen = pick_slices(mask, args.k, args.seed if len(volumes) == 1 else 0)
    prep = dataclasses.replace(base.card.preprocess, window=window)
    labels = _predict(_tune(base, image, mask, chosen, prep, args.seed), image, window)
    pred = labels == 1
    print(f"{args.task} ({name}), {args.k} slices {chosen} from {args.base}, seed {args.seed}: "
          f"Dice {_dice(labels, mask, chosen):.4f} on the other slices\n")
    print("| where | false voxels | missed voxels |\n|---|---|---|")
    for part, v in error_table(pred, mask, chosen).items():
        print(f"| {part} | {v['fp']} | {v['fn']} |")
    fp, fn = slice_errors(pred, mask)
    wrong = fp + fn
    wrong[chosen] = -1
    print("\n| slice | structure voxels | false | missed |\n|---|---|---|---|")
    for z in np.argsort(-wrong)[:args.top]:
        print(f"| {z} | {int(mask[z].sum())} | {fp[z]} | {fn[z]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
