"""How the fine-tuning check (``llm4seg.crosscheck``) decides, for the few-shot tasks: its two held-out Dice scores.

    python -m benchmarks.fewshot_check [--tasks isic colondb liver hippocampus] [--bases default generalist]
                                       [--folds 2 3] [--seeds 0 1 2] [--n-eval 100] [--json out.json]

For each task, base, seed and number of folds, the same labelled items as ``benchmarks.fewshot`` (2D images in
file order; 3D slices spread over the structure) are prepared as the Fine-tune widget prepares them
(``llm4seg.finetune.prepare``) and only the check runs: Dice of the start and of the fine-tuned copies on
held-out labelled items, and whether the start would be kept. The final training does not depend on the check,
so with ``benchmarks.fewshot``'s scores of the start (k = 0) and of the fine-tuned model without the check, this
says what the check does to Dice on the eval sets, at a fraction of the cost.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from llm4seg.crosscheck import cross_check
from llm4seg.events import run_to_end
from llm4seg.finetune import TrainingPair, prepare, summarise

from .fewshot import TASK_K, _config, file_order, load_base
from .fewshot_tasks import pick_items, pick_slices, tasks


def labelled(task, base_model, k: int, seed: int, volumes: list):
    """(plan, prep or None) of the items ``benchmarks.fewshot`` labels for this task, k and seed."""
    if task.kind == "2d":
        pairs = [TrainingPair(*task.load(n), name=n, rgb=task.rgb) for n in sorted(pick_items(task, k, seed),
                                                                                  key=file_order)]
        return summarise(pairs, base_model.card.classes), None
    name, image, mask, window = volumes[seed % len(volumes)]
    chosen = pick_slices(mask, k, seed if len(volumes) == 1 else 0)
    sparse = np.zeros_like(mask)
    sparse[chosen] = mask[chosen]
    plan = summarise([TrainingPair(image, sparse, name=name)], base_model.card.classes)
    return plan, dataclasses.replace(base_model.card.preprocess, window=window)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["isic", "colondb", "liver", "hippocampus"])
    ap.add_argument("--bases", nargs="+", default=["default", "generalist"])
    ap.add_argument("--folds", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n-eval", type=int, default=100, help="as benchmarks.fewshot's --n-eval: the 2D label pool "
                    "is what the eval set leaves")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    all_tasks, rows = tasks(args.n_eval), []
    for name in args.tasks:
        task = all_tasks[name]
        volumes = task.volumes() if task.kind == "3d" else []
        k = TASK_K.get(name, 10)
        for base in args.bases:
            model = load_base(base, task.rgb)
            for seed in args.seeds:
                plan, prep = labelled(task, model, k, seed, volumes)
                config = _config("quick", {"seed": seed}, base == "scratch")
                trained, data = run_to_end(prepare(model, plan, config, prep=prep))
                for folds in args.folds:
                    t = time.perf_counter()
                    check = run_to_end(cross_check(trained, data, config, folds))
                    row = {"task": name, "base": base, "k": k, "seed": seed, "folds": folds,
                           **(check.to_dict() if check else {}), "seconds": time.perf_counter() - t}
                    rows.append(row)
                    print(f"{name} {base} k={k} seed={seed} folds={folds}: start {row.get('start_dice', 0):.3f} "
                          f"fine-tuned {row.get('finetuned_dice', 0):.3f} → keep {row.get('kept')} "
                          f"({row['seconds']:.0f} s)", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"argv": argv if argv is not None else sys.argv[1:], "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
