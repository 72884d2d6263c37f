"""Few-shot fine-tuning across modalities: label k items, fine-tune as the Fine-tune widget does, score the rest.

    python -m benchmarks.fewshot --quick                    # the short form (about 5-10 min on 2 CPU cores)
    python -m benchmarks.fewshot [--tasks isic colondb liver hippocampus ...] [--k 1 3 5 10 20]
                                 [--bases auto default generalist scratch] [--preset quick] [--seeds 0 1 2]
                                 [--set lr=2e-3 --set steps=150] [--blend 0.5 0.75] [--post largest fill]
                                 [--size 256] [--tta off] [--json out.json]

For each task (``benchmarks/fewshot_tasks.py``), base checkpoint, k and seed: pick k labelled images (2D)
or k slices spread over the structure (3D), fine-tune with :func:`llm4seg.finetune.finetune` (the widget's
code, its defaults unless ``--set`` overrides the preset), segment with :func:`llm4seg.infer.segment`
and score Dice and IoU on every item of the eval set (2D: per-image mean over a fixed, disjoint set)
or on all other slices of the volume (3D: pooled). k = 0 is the base without fine-tuning. ``scratch`` is
a new network (no pre-trained CNN weights) trained with the same preset at the same budget; ``auto`` (the
default) is the start the Fine-tune widget takes with the default model in use (``gray-start`` for volumes).
``--blend A`` also scores each fine-tuned model blended back toward its base (``llm4seg.adapt.blend_weights``,
rows ``<base> blend A``) without training again. ``--post largest fill`` also scores the same masks after the Segment
widget's clean-up (largest component per class, holes filled; in 3D on a volume, per image in 2D), rows
``<base> +post``. ``--size`` fine-tunes at that input size (the new card segments at it); ``--tta`` is the test-time
augmentation of every row, k = 0 included (default ``auto``, the Segment widget's: flips for weights trained
with them, none after a quick fine-tune on cached features). Prints mean ± sd over seeds; ``--json`` keeps every
run (``benchmarks/fewshot_plot.py`` draws the curves).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm4seg.adapt import blend_weights, expand_to_rgb
from llm4seg.events import run_to_end
from llm4seg.finetune import TrainingPair, finetune, preset_config, summarise
from llm4seg.infer import TTA_OPTIONS, segment, tta_option
from llm4seg.postprocess import PostprocessOptions, postprocess
from llm4seg.preprocess import Preprocessing

from .fewshot_tasks import Task, pick_items, pick_slices, tasks

QUICK = dict(tasks=["liver", "isic", "colondb", "hippocampus"], k=[5, 10], bases=["auto"], seeds=[0], n_eval=60)
TASK_K = {"liver": 5, "hippocampus": 5, "portal_vein": 5, "bone": 5}  # --quick: one k per task


def widget_start(task: Task) -> str:
    """The base the Fine-tune widget's *auto* start takes for ``task`` with the default model in use
    (:func:`llm4seg.models.auto_start`: ``gray-start`` for volumes, else ``default``)."""
    from llm4seg.models import DEFAULT_NAME, auto_start

    shape = (2, 2, 2) if task.kind == "3d" else (2, 2)
    pair = TrainingPair(np.zeros(shape, np.uint8), np.zeros(shape, np.uint8), task.name)
    return auto_start(DEFAULT_NAME, [pair]) or DEFAULT_NAME


def load_base(name: str, rgb: bool) -> torch.nn.Module:
    """A base model: a shipped name or checkpoint path, or ``scratch`` (a new network, seed 0)."""
    if name != "scratch":
        from llm4seg.models import load_model

        return load_model(name, device="cpu")
    from llm4seg.checkpoint import ModelCard
    from llm4seg.llm import DEFAULT_LLM
    from llm4seg.model import ModelConfig, build_model

    model = build_model(ModelConfig(in_channels=3 if rgb else 1, num_classes=1, llm=DEFAULT_LLM), seed=0)
    model.card = ModelCard(name="scratch", classes=["background", "foreground"],
                           preprocessing=Preprocessing(size=128, channels=3 if rgb else 1).to_dict())
    return model


def scores(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two binary masks (1.0 when both are empty)."""
    p, t = pred.astype(bool), truth.astype(bool)
    inter, total, union = np.logical_and(p, t).sum(), p.sum() + t.sum(), np.logical_or(p, t).sum()
    return (float(2 * inter / total), float(inter / union)) if total else (1.0, 1.0)


def slice_errors(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and missed pixels of each slice of two binary (Z, H, W) masks."""
    p, t = pred.astype(bool).reshape(len(pred), -1), truth.astype(bool).reshape(len(truth), -1)
    return (p & ~t).sum(axis=1), (~p & t).sum(axis=1)


def check_note(outcome) -> str:
    """The check's two held-out Dice scores, and whether it kept the start."""
    c = outcome.check
    if c is None:
        return ""
    if not c.ran:
        return f"; no check (start {c.start_dice:.3f} on the labelled items)"
    return f"; check {c.start_dice:.3f} → {c.finetuned_dice:.3f}{', start kept' if c.keep_start else ''}"


def file_order(name: str) -> tuple[int, str]:
    """Names as a file browser lists them (2 before 10): labelled pairs arrive in the order a user opens them."""
    return len(name), name


def post_options(names: list[str]) -> PostprocessOptions | None:
    """The clean-up ``--post`` names (``largest``, ``fill``), or None."""
    return PostprocessOptions(largest="largest" in names, fill_holes="fill" in names) if names else None


@dataclasses.dataclass
class Scoring:
    """How each fine-tune is run and scored beyond the preset: blends, clean-up, input size, test-time aug."""

    blends: list[float] = dataclasses.field(default_factory=list)
    post: PostprocessOptions | None = None
    size: int | None = None
    tta: str | None = None


def _views(pred: np.ndarray, post: PostprocessOptions | None, mode: str) -> dict[str, np.ndarray]:
    """The masks to score: as segmented (``""``) and, with ``post``, cleaned up (``" +post"``)."""
    out = {"": pred}
    if post is not None:
        out[" +post"] = postprocess(pred, dataclasses.replace(post, mode=mode))
    return out


def _eval_2d(model: torch.nn.Module, items: list[tuple[np.ndarray, np.ndarray]],
             post: PostprocessOptions | None = None, tta: str | None = None) -> dict[str, tuple[float, float]]:
    """Mean Dice and IoU per view (see :func:`_views`) over the eval items."""
    by_shape: dict[tuple, list[int]] = {}
    for i, (image, _) in enumerate(items):
        by_shape.setdefault(image.shape, []).append(i)
    per: dict[str, list[tuple[float, float]]] = {}
    for idx in by_shape.values():  # same-sized images are segmented as one stack, as a volume would be
        stack = np.stack([items[i][0] for i in idx])
        for view, pred in _views(segment(stack, model, volume=True, tta=tta).labels, post, "slice").items():
            per.setdefault(view, []).extend(scores(pred[j] == 1, items[i][1]) for j, i in enumerate(idx))
    return {view: (float(np.mean([d for d, _ in v])), float(np.mean([u for _, u in v]))) for view, v in per.items()}


def blended(base: torch.nn.Module, trained: torch.nn.Module, alphas: list[float]):
    """(alpha, model) for each alpha: ``trained`` moved back toward ``base`` (RGB-expanded when it was)."""
    start = copy.deepcopy(base)
    if trained.config.in_channels == 3:
        expand_to_rgb(start)
    for alpha in alphas:
        yield alpha, blend_weights(start, copy.deepcopy(trained), alpha)


def _config(preset: str, overrides: dict[str, Any], scratch: bool):
    config = preset_config(preset, **overrides)
    if scratch and config.train == "decoder":  # a random encoder cannot be frozen: same preset, whole network
        config = config.replace(train="all", cache_features=False, crop=None)
    return config


def run_2d(task: Task, base: str, ks: list[int], seeds: list[int], preset: str, overrides: dict,
           evalset: list, opts: Scoring = Scoring()) -> list[dict]:
    model = load_base(base, task.rgb)
    prep = dataclasses.replace(model.card.preprocess, size=opts.size) if opts.size else None
    rows = []
    for view, (d, u) in _eval_2d(model, evalset, opts.post, opts.tta).items():
        rows.append(dict(task=task.name, base=base + view, k=0, seed=0, dice=d, iou=u, train_s=0.0))
    for k in (k for k in ks if k > 0):  # k = 0 is the base row above
        for seed in seeds:
            names = sorted(pick_items(task, k, seed), key=file_order)
            pairs = [TrainingPair(*task.load(n), name=n, rgb=task.rgb) for n in names]
            plan = summarise(pairs, model.card.classes)
            t = time.perf_counter()
            outcome = run_to_end(finetune(model, plan, _config(preset, {**overrides, "seed": seed}, base == "scratch"),
                                          prep=prep))
            train_s = time.perf_counter() - t
            for view, (d, u) in _eval_2d(outcome.model, evalset, opts.post, opts.tta).items():
                rows.append(dict(task=task.name, base=base + view, k=k, seed=seed, dice=d, iou=u, train_s=train_s,
                                 steps=outcome.result.steps, val_items=outcome.val_items,
                                 kept_start=outcome.kept_start, check=outcome.check.to_dict() if outcome.check else None))
                print(f"  {task.name} {base}{view} k={k} seed={seed}: Dice {d:.4f} IoU {u:.4f} ({train_s:.0f} s)"
                      f"{check_note(outcome)}", flush=True)
            for alpha, m in blended(model, outcome.model, opts.blends):
                d, u = _eval_2d(m, evalset, tta=opts.tta)[""]
                rows.append({**rows[-1], "base": f"{base} blend {alpha:g}", "dice": d, "iou": u})
                print(f"    blend {alpha:g}: Dice {d:.4f} IoU {u:.4f}", flush=True)
    return rows


def run_3d(task: Task, base: str, ks: list[int], seeds: list[int], preset: str, overrides: dict,
           volumes: list, opts: Scoring = Scoring()) -> list[dict]:
    model = load_base(base, False)
    rows = []
    for seed in [0] + [s for s in seeds if s]:
        name, image, mask, window = volumes[seed % len(volumes)]
        prep = dataclasses.replace(model.card.preprocess, window=window)
        if seed == 0 or len(volumes) > 1:
            for view, pred in _views(segment(image, model, prep=prep, tta=opts.tta).labels, opts.post, "3d").items():
                d, u = scores(pred == 1, mask)
                rows.append(dict(task=task.name, base=base + view, k=0, seed=seed, dice=d, iou=u, train_s=0.0,
                                 volume=name))
        for k in ks:
            if seed not in seeds or k == 0:  # k = 0 is the base row above
                continue
            chosen = pick_slices(mask, k, seed if len(volumes) == 1 else 0)
            sparse = np.zeros_like(mask)
            sparse[chosen] = mask[chosen]
            plan = summarise([TrainingPair(image, sparse, name=name)], model.card.classes)
            t = time.perf_counter()
            outcome = run_to_end(finetune(model, plan, _config(preset, {**overrides, "seed": seed}, base == "scratch"),
                                          prep=dataclasses.replace(prep, size=opts.size) if opts.size else prep))
            train_s = time.perf_counter() - t
            others = np.setdiff1d(np.arange(len(mask)), chosen)
            for alpha, m in [(1.0, outcome.model), *blended(model, outcome.model, opts.blends)]:
                prep_m = dataclasses.replace(m.card.preprocess, window=window)
                pred = segment(image, m, prep=prep_m, tta=opts.tta).labels
                for view, p in _views(pred, opts.post if alpha == 1.0 else None, "3d").items():
                    d, u = scores(p[others] == 1, mask[others])
                    label = base + view if alpha == 1.0 else f"{base} blend {alpha:g}"
                    rows.append(dict(task=task.name, base=label, k=k, seed=seed, dice=d, iou=u, train_s=train_s,
                                     volume=name, slices=chosen, steps=outcome.result.steps,
                                     val_items=outcome.val_items, kept_start=outcome.kept_start,
                                     check=outcome.check.to_dict() if outcome.check else None))
                    print(f"  {task.name} {label} k={k} seed={seed} {name}: Dice {d:.4f} IoU {u:.4f} "
                          f"({train_s:.0f} s){check_note(outcome)}", flush=True)
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Mean ± sd over seeds per (task, base, k)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["base"], r["k"]), []).append(r)
    out = []
    for (task, base, k), rs in groups.items():
        def ms(key: str) -> tuple[float, float]:
            v = [r[key] for r in rs]
            return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)
        out.append(dict(task=task, base=base, k=k, n=len(rs), dice=ms("dice"), iou=ms("iou"), train_s=ms("train_s")))
    return out


def markdown(table: list[dict], all_tasks: dict[str, Task]) -> str:
    lines = ["| task | unseen | base | k | Dice (mean ± sd) | IoU (mean ± sd) | fine-tune s | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table:
        t = all_tasks[r["task"]]
        lines.append(f"| {r['task']} ({t.modality}) | {'yes' if t.unseen else 'no'} | {r['base']} | {r['k']} | "
                     f"{r['dice'][0]:.3f} ± {r['dice'][1]:.3f} | {r['iou'][0]:.3f} ± {r['iou'][1]:.3f} | "
                     f"{r['train_s'][0]:.0f} | {r['n']} |")
    return "\n".join(lines)


def _overrides(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in pairs:
        key, _, value = item.partition("=")
        for cast in (int, float):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key] = {"true": True, "false": False, "none": None}.get(value.lower(), value)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="liver, ISIC, ColonDB, hippocampus; one seed; 60 eval images")
    ap.add_argument("--tasks", nargs="+")
    ap.add_argument("--k", type=int, nargs="+")
    ap.add_argument("--bases", nargs="+")
    ap.add_argument("--seeds", type=int, nargs="+")
    ap.add_argument("--preset", default="quick", choices=["quick", "thorough"])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset setting")
    ap.add_argument("--n-eval", type=int, help="2D eval-set size (default 200; 60 with --quick)")
    ap.add_argument("--blend", type=float, nargs="+", default=[], metavar="A",
                    help="also score each fine-tuned model blended A of the way from its base (0 < A < 1)")
    ap.add_argument("--post", nargs="+", default=[], choices=["largest", "fill"],
                    help="also score the masks cleaned up as the Segment widget can (rows '<base> +post')")
    ap.add_argument("--size", type=int, help="fine-tune (and then segment) at this input size instead of the base's")
    ap.add_argument("--tta", choices=TTA_OPTIONS, default="auto",
                    help="test-time augmentation (default auto, as the Segment widget)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write every run and the summary as JSON")
    ap.add_argument("--label", default="", help="name of this run in the plots (default: preset and overrides)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    defaults = QUICK if args.quick else dict(tasks=["liver", "isic", "colondb", "hippocampus"], k=[1, 3, 5, 10, 20],
                                              bases=["auto"], seeds=[0, 1, 2], n_eval=200)
    sel = {key: getattr(args, key) or defaults[key] for key in ("tasks", "k", "bases", "seeds")}
    n_eval = args.n_eval or defaults["n_eval"]
    overrides = _overrides(args.set)
    opts = Scoring(args.blend, post_options(args.post), args.size, tta_option(args.tta))
    all_tasks = tasks(n_eval)
    rows: list[dict] = []
    started = time.perf_counter()
    for name in sel["tasks"]:
        task = all_tasks[name]
        ks = [TASK_K.get(name, 10)] if args.quick and not args.k else sel["k"]
        evalset = [task.load(n) for n in task.eval] if task.kind == "2d" else []  # read once for every base
        volumes = task.volumes() if task.kind == "3d" else []
        for base in (widget_start(task) if b == "auto" else b for b in sel["bases"]):
            if task.kind == "2d":
                rows += run_2d(task, base, ks, sel["seeds"], args.preset, overrides, evalset, opts)
            else:
                rows += run_3d(task, base, ks, sel["seeds"], args.preset, overrides, volumes, opts)
    table = summary(rows)
    print(f"\nFew-shot fine-tuning, preset {args.preset}{f' with {overrides}' if overrides else ''}; "
          f"2D eval sets of {n_eval} images; {time.perf_counter() - started:.0f} s in all\n")
    print(markdown(table, all_tasks))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"argv": argv if argv is not None else sys.argv[1:], "preset": args.preset, "overrides": overrides, "label": args.label,
                                         "rows": rows, "summary": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
