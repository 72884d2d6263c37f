"""Does fine-tuning fit the labelled images at all? Dice on the k labelled images themselves and on the eval set.

    python -m benchmarks.fewshot_fit --task colondb --base polyp --k 10 --seed 0 \
        --variant quick --variant nocheck:crosscheck=0 --variant lr3e-4:crosscheck=0,lr=3e-4

A fine-tune that lowers the eval Dice either learnt the labelled images and not what they share with the others
(high Dice on them: over-fitting), or could not learn them in its budget (low Dice on them too: the features or
the steps fall short). Each ``--variant NAME[:KEY=VALUE,...]`` is the *quick* preset (or ``--preset``) with those
overrides; 2D tasks of ``benchmarks/fewshot_tasks.py``.
"""
from __future__ import annotations

import argparse
import time

import torch

from llm4seg.events import run_to_end
from llm4seg.finetune import TrainingPair, finetune, summarise

from .fewshot import _config, _eval_2d, _overrides, file_order, load_base
from .fewshot_tasks import pick_items, tasks


def parse_variant(text: str) -> tuple[str, dict]:
    """``NAME[:KEY=VALUE,...]`` → (name, typed overrides)."""
    name, _, settings = text.partition(":")
    return name, _overrides([s for s in settings.split(",") if s])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="colondb")
    ap.add_argument("--base", default="polyp")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="quick", choices=["quick", "thorough"])
    ap.add_argument("--variant", action="append", default=[], metavar="NAME[:KEY=VALUE,...]")
    ap.add_argument("--n-eval", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    task = tasks(args.n_eval)[args.task]
    if task.kind != "2d":
        raise SystemExit(f"{args.task} is a volume task: choose a 2D one")
    evalset = [task.load(n) for n in task.eval]
    model = load_base(args.base, task.rgb)
    names = sorted(pick_items(task, args.k, args.seed), key=file_order)
    labelled = [task.load(n) for n in names]
    print("| variant | s | start kept | Dice on the labelled | Dice on the eval set |\n|---|---|---|---|---|")
    print(f"| start ({args.base}) | 0 | - | {_eval_2d(model, labelled)[''][0]:.3f} | "
          f"{_eval_2d(model, evalset)[''][0]:.3f} |")
    for name, overrides in map(parse_variant, args.variant or ["quick"]):
        plan = summarise([TrainingPair(im, m, name=n, rgb=task.rgb) for n, (im, m) in zip(names, labelled)],
                         model.card.classes)
        t = time.perf_counter()
        out = run_to_end(finetune(model, plan, _config(args.preset, {**overrides, "seed": args.seed},
                                                       args.base == "scratch")))
        print(f"| {name} | {time.perf_counter() - t:.0f} | {'yes' if out.kept_start else 'no'} | "
              f"{_eval_2d(out.model, labelled)[''][0]:.3f} | {_eval_2d(out.model, evalset)[''][0]:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
