"""Does "Label this next" pick better slices? 5 labelled slices chosen three ways, then a quick fine-tune.

    python -m benchmarks.fewshot_suggest [--tasks liver hippocampus] [--base default] [--seeds 0 1 2]

* even: 5 slices spread evenly over the structure (what a careful user does by hand);
* random: 5 random slices of the structure's extent (seeded);
* suggested: 2 even slices, a quick fine-tune, then the 3 slices ``llm4seg.suggest`` ranks first (over the
  whole volume, as the widget does: a suggested slice without the structure adds no labels, as in the widget),
  and a fine-tune of the base on all 5.
Dice is pooled over all other slices of the volume. Hippocampus seeds take different volumes.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np
import torch

from llm4seg.events import run_to_end
from llm4seg.finetune import TrainingPair, finetune, preset_config, summarise
from llm4seg.infer import segment
from llm4seg.suggest import suggest_slices

from .fewshot import load_base, scores
from .fewshot_tasks import pick_slices, tasks


def _tune(model, image, mask, chosen, prep, seed):
    sparse = np.zeros_like(mask)
    sparse[chosen] = mask[chosen]
    plan = summarise([TrainingPair(image, sparse, name="v")], model.card.classes)
    return run_to_end(finetune(model, plan, preset_config("quick", seed=seed), prep=prep)).model


def _score(model, image, mask, chosen, window):
    prep = dataclasses.replace(model.card.preprocess, window=window)
    pred = segment(image, model, prep=prep).labels
    others = np.setdiff1d(np.arange(len(mask)), chosen)
    return scores(pred[others] == 1, mask[others])[0]


def run(task_name: str, base_name: str, seed: int, min_area: float = 0.25) -> dict:
    task = tasks()[task_name]
    volumes = task.volumes()
    name, image, mask, window = volumes[seed % len(volumes)]
    base = load_base(base_name, False)
    prep = dataclasses.replace(base.card.preprocess, window=window)
    zs = np.flatnonzero(mask.reshape(len(mask), -1).any(axis=1))
    rng = np.random.default_rng(seed)
    picks = {"even": pick_slices(mask, 5, 0 if len(volumes) > 1 else seed),
             "random": sorted(rng.choice(zs, 5, replace=False).tolist())}
    out = {"task": task_name, "volume": name, "seed": seed}
    for how, chosen in picks.items():
        out[how] = _score(_tune(base, image, mask, chosen, prep, seed), image, mask, chosen, window)
    t = time.perf_counter()
    first = pick_slices(mask, 2, 0)
    tuned = _tune(base, image, mask, first, prep, seed)
    probs = segment(image, tuned, prep=dataclasses.replace(tuned.card.preprocess, window=window),
                    return_probs=True).probs
    chosen = sorted(first + [s.z for s in suggest_slices(probs, first, 3, min_area=min_area)])
    out["suggested"] = _score(_tune(base, image, mask, chosen, prep, seed), image, mask, chosen, window)
    out["suggested_slices"], out["suggest_s"] = chosen, time.perf_counter() - t
    print(out, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["liver", "hippocampus"])
    ap.add_argument("--base", default="default")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-area", type=float, default=0.25, help="suggest_slices(min_area=...)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [run(t, args.base, s, args.min_area) for t in args.tasks for s in args.seeds]
    print(f"\n5 labelled slices, quick fine-tune from {args.base} (min_area {args.min_area}): Dice on the other slices "
          "(mean ± sd over seeds)\n")
    print("| task | even | random | 2 even + 3 suggested | seeds |\n|---|---|---|---|---|")
    for t in args.tasks:
        rs = [r for r in rows if r["task"] == t]
        cells = []
        for how in ("even", "random", "suggested"):
            v = [r[how] for r in rs]
            cells.append(f"{statistics.fmean(v):.3f} ± {statistics.stdev(v) if len(v) > 1 else 0:.3f}")
        print(f"| {t} | {' | '.join(cells)} | {len(rs)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
