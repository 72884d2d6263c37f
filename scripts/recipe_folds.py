"""Which training recipe gives the best BUSI model for a fixed CPU budget? Paired, cross-validated.

    python scripts/recipe_folds.py run --out runs/recipes [--folds 2] [--minutes 40] [--recipes ...]
    python scripts/recipe_folds.py report runs/recipes [--svg docs/images/recipes.svg] [--recipes ...]

Every recipe trains the shipped architecture (CMUNeXt + the frozen SmolLM2 layer, from the same CNN start per
fold) on the same ``--folds`` folds of the 452 BUSI pairs as ``scripts/ablation_folds.py`` (same seeded split),
for the same wall-clock budget: short probes, run back to back before any training, time each recipe's steps on
this machine and size its schedule to ``--minutes`` (a 256² recipe gets about a quarter of the steps of a 128²
one); the counts are kept in ``<out>/steps.json`` and reused by every fold and session, so a machine whose speed
drifts between runs does not hand one recipe more steps than another. The *last* weights
are scored on every held-out image at native size (nothing is chosen on the reported fold). Each (recipe, fold)
writes ``<out>/<recipe>-fold<k>.json`` and is skipped when it exists, so an interrupted study continues with
the same command. ``report`` prints mean ± sd over folds and the paired per-image difference to the paper's
recipe with a bootstrap 95 % CI. Run it in the background, alone on the CPU (the probe's timing decides
the number of steps).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

from ablation_folds import folds_of, plot, report, run_missing, score_held_out  # noqa: E402

# name: (input size, TrainConfig settings); all use batch 8 unless stated, flips + rot90, BCE + Dice
RECIPES: dict[str, tuple[int, dict]] = {
    "paper-sgd": (128, dict(optimizer="sgd", lr=0.01, momentum=0.9, schedule="poly", warmup_steps=0)),
    "adamw-1e-3": (128, dict(optimizer="adamw", lr=1e-3, schedule="cosine", warmup_steps=100)),
    "adamw-2e-3": (128, dict(optimizer="adamw", lr=2e-3, schedule="cosine", warmup_steps=100)),
    "adamw-5e-3": (128, dict(optimizer="adamw", lr=5e-3, schedule="cosine", warmup_steps=100)),
    "adamw-2e-3-b4": (128, dict(optimizer="adamw", lr=2e-3, schedule="cosine", warmup_steps=100, batch_size=4)),
    "adamw-2e-3-256": (256, dict(optimizer="adamw", lr=2e-3, schedule="cosine", warmup_steps=100)),
    "adamw-2e-3-jitter": (128, dict(optimizer="adamw", lr=2e-3, schedule="cosine", warmup_steps=100, jitter=1.0)),
}
LABELS = {
    "paper-sgd": "paper: SGD 0.01, momentum 0.9, poly 0.9, 128²",
    "adamw-1e-3": "AdamW 1e-3, warm-up + cosine, 128²",
    "adamw-2e-3": "AdamW 2e-3, warm-up + cosine, 128²",
    "adamw-5e-3": "AdamW 5e-3, warm-up + cosine, 128²",
    "adamw-2e-3-b4": "AdamW 2e-3, batch 4, 128²",
    "adamw-2e-3-256": "AdamW 2e-3, warm-up + cosine, 256²",
    "adamw-2e-3-jitter": "AdamW 2e-3, 128², + rotation/zoom/appearance jitter",
}
PROBE_STEPS = 6


def train_config(recipe: str, steps: int, seed: int, threads: int):
    from llm4seg.train import TrainConfig

    settings = {"batch_size": 8, "weight_decay": 1e-4, **RECIPES[recipe][1]}
    settings["warmup_steps"] = min(settings["warmup_steps"], steps // 10)
    return TrainConfig(preset=f"recipe {recipe}", steps=steps, augment=True, select="last", seed=seed,
                       device="cpu", num_threads=threads, **settings)


def seconds_per_step(recipe: str, train, model_config, seed: int, threads: int) -> float:
    """Wall time of one training step of ``recipe`` on this machine (after one warm-up step)."""
    from llm4seg.events import CancelToken, Progress, run_to_end
    from llm4seg.model import build_model
    from llm4seg.train import fit

    ends: list[float] = []  # the end of each training step

    def on_event(event) -> None:
        if isinstance(event, Progress) and event.phase == "training":
            ends.append(time.perf_counter())

    model = build_model(model_config, seed=seed)
    run_to_end(fit(model, train, None, train_config(recipe, PROBE_STEPS + 1, seed, threads), CancelToken()),
               on_event)
    if len(ends) < 2:
        raise RuntimeError(f"the probe of {recipe} timed {len(ends)} step(s); expected {PROBE_STEPS + 1}")
    return (ends[-1] - ends[0]) / (len(ends) - 1)


def fold_data(recipe: str, fold: int, folds: list[list[str]], args: argparse.Namespace) -> tuple:
    """(sources, held-out names, preprocessing, training slices) of ``fold`` at ``recipe``'s input size."""
    import torch

    from llm4seg.preprocess import Preprocessing
    from llm4seg.train import build_slices
    from llm4seg.train.sources import find_sources

    torch.set_num_threads(args.threads)
    sources, classes = find_sources(args.data)
    held = set(folds[fold])
    prep = Preprocessing(size=RECIPES[recipe][0])
    return sources, held, prep, build_slices([s for s in sources if s.name not in held], prep, classes)


def budgets(recipes: list[str], fold: int, folds: list[list[str]], args: argparse.Namespace) -> dict:
    """Steps per recipe for ``--minutes``: read from ``<out>/steps.json``, else probed now **back to back** (every
    recipe timed at the same machine speed) and stored there, so every fold and every later session trains the
    same number of steps."""
    from llm4seg.llm import DEFAULT_LLM
    from llm4seg.model import ModelConfig

    path = args.out / "steps.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    if any(v["minutes"] != args.minutes for v in known.values()):
        raise SystemExit(f"{path} holds step counts for another --minutes; use another --out or the same budget")
    for recipe in (r for r in recipes if r not in known):
        train = fold_data(recipe, fold, folds, args)[3]
        per_step = seconds_per_step(recipe, train, ModelConfig(llm=DEFAULT_LLM), args.seed + fold, args.threads)
        known[recipe] = {"minutes": args.minutes, "probe_s_per_step": round(per_step, 4),
                         "steps": max(10, int(args.minutes * 60 / per_step))}
        print(f"{recipe}: {per_step:.3f} s per step → {known[recipe]['steps']} steps", flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(known, indent=1))
    return known


def run_one(recipe: str, fold: int, folds: list[list[str]], args: argparse.Namespace) -> dict:
    from llm4seg.events import CancelToken, run_to_end
    from llm4seg.llm import DEFAULT_LLM
    from llm4seg.model import ModelConfig, build_model
    from llm4seg.train import fit

    sources, held, prep, train = fold_data(recipe, fold, folds, args)
    config = ModelConfig(llm=DEFAULT_LLM)
    seed = args.seed + fold
    per_step = None if args.steps else args.budget[recipe]["probe_s_per_step"]
    steps = args.steps or args.budget[recipe]["steps"]
    model = build_model(config, seed=seed)
    t0 = time.perf_counter()
    result = run_to_end(fit(model, train, None, train_config(recipe, steps, seed, args.threads), CancelToken()),
                        lambda e: None)
    seconds = time.perf_counter() - t0
    return {"arm": recipe, "fold": fold, "steps": steps, "seconds": round(seconds, 1), "size": prep.size,
            "probe_s_per_step": per_step and round(per_step, 4), "seed": seed,
            "images": score_held_out(result.model, sources, held, prep)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "busi")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--folds", type=int, default=2, help="train on the others, score each (of 3 ablation folds)")
    r.add_argument("--only-folds", type=int, nargs="+", metavar="K",
                   help="run these of the --folds folds only (e.g. 1: the second), as a study split over sessions")
    r.add_argument("--minutes", type=float, default=40.0, help="wall-clock training budget per run")
    r.add_argument("--steps", type=int, help="a fixed number of steps instead of the time budget (tests)")
    r.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=2)
    q = sub.add_parser("report")
    q.add_argument("folder", type=Path)
    q.add_argument("--metric", choices=("iou", "dice"), default="iou")
    q.add_argument("--svg", type=Path)
    q.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES),
                   help="only these (the table pools the folds that all of them have)")
    q.add_argument("--reference", choices=list(RECIPES), default="paper-sgd", help="the differences are to this one")
    args = ap.parse_args(argv)
    if args.command == "report":
        names = tuple(r for r in RECIPES if r in args.recipes)
        text, _ = report(args.folder, args.metric, names, LABELS, reference=args.reference)
        print(text)
        if args.svg:
            plot(args.folder, args.svg, args.metric, names, {n: n for n in names}, reference=args.reference,
                 title="BUSI recipe study, equal CPU time per run")
            print(f"wrote {args.svg}")
        return 0
    from llm4seg.train.sources import find_sources

    sources, _ = find_sources(args.data)
    folds = folds_of([s.name for s in sources], 3, args.seed)  # the ablation's folds: the first --folds of them
    which = [k for k in range(min(args.folds, 3)) if args.only_folds is None or k in args.only_folds]
    todo = [r for r in args.recipes if any(not (args.out / f"{r}-fold{k}.json").exists() for k in which)]
    args.budget = {} if args.steps or not todo or not which else budgets(todo, which[0], folds, args)
    run_missing(run_one, args.recipes, which, folds, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
