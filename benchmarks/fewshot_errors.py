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

from llm4seg.events import run_to_end
from llm4seg.finetune import TrainingPair, finetune, preset_config, summarise
from llm4seg.infer import segment

from .fewshot import load_base, scores
from .fewshot_tasks import pick_slices, tasks


def error_table(pred: np.ndarray, mask: np.ndarray, labelled: list[int]) -> dict[str, dict[str, int]]:
    """False positives and misses (voxels) on the unlabelled slices: inside the labelled z-range, beyond it, and
    on the slices without the structure (``empty``, a part of the other two)."""
    pred, mask = pred.astype(bool), mask.astype(bool)
    z = np.arange(len(mask))
    others = ~np.isin(z, labelled)
    inside = (z >= min(labelled)) & (z <= max(labelled))
    empty = ~mask.reshape(len(mask), -1).any(axis=1)
    fp = (pred & ~mask).reshape(len(mask), -1).sum(axis=1)
    fn = (~pred & mask).reshape(len(mask), -1).sum(axis=1)
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
    sparse = np.zeros_like(mask)
    sparse[chosen] = mask[chosen]
    plan = summarise([TrainingPair(image, sparse, name=name)], base.card.classes)
    prep = dataclasses.replace(base.card.preprocess, window=window)
    tuned = run_to_end(finetune(base, plan, preset_config("quick", seed=args.seed), prep=prep)).model
    pred = segment(image, tuned, prep=dataclasses.replace(tuned.card.preprocess, window=window)).labels == 1
    others = np.setdiff1d(np.arange(len(mask)), chosen)
    print(f"{args.task} ({name}), {args.k} slices {chosen} from {args.base}, seed {args.seed}: "
          f"Dice {scores(pred[others], mask[others])[0]:.4f} on the other slices\n")
    print("| where | false voxels | missed voxels |\n|---|---|---|")
    for part, v in error_table(pred, mask, chosen).items():
        print(f"| {part} | {v['fp']} | {v['fn']} |")
    wrong = (pred != mask.astype(bool)).reshape(len(mask), -1).sum(axis=1)
    wrong[chosen] = -1
    print("\n| slice | structure voxels | false | missed |\n|---|---|---|---|")
    for z in np.argsort(-wrong)[:args.top]:
        print(f"| {z} | {int(mask[z].sum())} | {int((pred[z] & ~mask[z].astype(bool)).sum())} | "
              f"{int((~pred[z] & mask[z].astype(bool)).sum())} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
