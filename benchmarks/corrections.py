"""Which corrections does fine-tuning survive? A user corrects k slices (or images) of their own data in the
start's output and fine-tunes with the quick preset, as the Fine-tune widget does.

    python -m benchmarks.corrections [--tasks liver hippocampus colondb] [--patterns worst wrong spread end]
                                     [--k 1 3 5] [--keep 0.5] [--json out.json] [--report out.json ...]

Patterns: ``worst`` the k slices/images of lowest Dice, ``wrong`` the k with most wrong pixels, ``spread`` k
evenly spread over the structure, ``end`` k adjacent at the structure's first end. Volumes: the pair is the
start's output with the chosen slices corrected (``TrainingPair.slices``), scored on the whole volume;
``--tuning``: hippocampus volumes 4-6 instead of 1-3,
where ``--keep`` is chosen. 2D (``colondb``, 30 frames): the chosen frames corrected, the others handed over as the user's other images
(context) and scored (mean Dice over all 30). Every row says what the change check said. ``--keep`` is the
share of samples from the start's masks on the uncorrected slices (``llm4seg.anchor``; 0: off).
Segmentation without test-time augmentation, before and after.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from llm4seg import anchor
from llm4seg.anchor import ChangeReport
from llm4seg.events import run_to_end
from llm4seg.finetune import TrainingPair, finetune, preset_config, summarise
from llm4seg.infer import segment
from llm4seg.models import load_model
from llm4seg.train import NothingToLearn

from .fewshot import scores
from .fewshot_tasks import _hippocampus, _ircad, tasks

PATTERNS = ("worst", "wrong", "spread", "end")
STARTS = {"liver": "ct-liver", "hippocampus": "gray-start", "colondb": "polyp"}


def choose(pattern: str, dice: np.ndarray, wrong: np.ndarray, present: np.ndarray, k: int) -> list[int]:
    """k indices among ``present`` (items with the object in the truth or the start's mask) by ``pattern``."""
    idx = np.flatnonzero(present)
    if pattern == "worst":
        return sorted(idx[np.argsort(dice[idx], kind="stable")[:k]].tolist())
    if pattern == "wrong":
        return sorted(idx[np.argsort(-wrong[idx], kind="stable")[:k]].tolist())
    if pattern == "spread":
        return sorted(idx[np.linspace(0, len(idx) - 1, k + 2)[1:-1].round().astype(int)].tolist()) if k else []
    if pattern == "end":
        return idx[:k].tolist()
    raise ValueError(f"unknown pattern {pattern!r}: choose from {PATTERNS}")


def per_item(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per slice/image: Dice, wrong pixels, whether the object is in the truth or the prediction."""
    p, t = pred.reshape(len(pred), -1) > 0, truth.reshape(len(truth), -1) > 0
    inter, total = (p & t).sum(1), p.sum(1) + t.sum(1)
    dice = np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)
    return dice, (p ^ t).sum(1), total > 0


def _finetune(model, pairs, k, seed, keep, context=()):
    plan = summarise(pairs, model.card.classes)
    t = time.perf_counter()
    outcome = run_to_end(finetune(model, plan, preset_config("quick", seed=seed), keep=keep, context=context))
    return outcome, time.perf_counter() - t


def _refused(task, pattern, k, keep, before, chosen, why) -> dict:
    print(f"  {task} {pattern} k={k} keep={keep:g}: refused ({why})", flush=True)
    return dict(task=task, pattern=pattern, k=k, keep=keep, before=round(before, 4), after=round(before, 4),
                seconds=0.0, chosen=chosen, kept_start=False, check=None, change=None, drastic=False, refused=why)


def _row(task, pattern, k, keep, before, after, outcome, seconds, chosen) -> dict:
    change = outcome.change
    row = dict(task=task, pattern=pattern, k=k, keep=keep, margin_share=anchor.MARGIN_SHARE,
               before=round(before, 4), after=round(after, 4),
               seconds=round(seconds, 1), chosen=chosen, kept_start=outcome.kept_start,
               check=outcome.check.to_dict() if outcome.check else None,
               change=change.to_dict() if change else None, drastic=outcome.drastic)
    said = ("drastic change" if outcome.drastic else "notable change" if change is not None and change.notable
            else "start kept" if outcome.kept_start else "ok")
    print(f"  {task} {pattern} k={k} keep={keep:g}: Dice {before:.3f} → {after:.3f} ({seconds:.0f} s; {said})"
          + (f"; {change.describe()}" if change else ""), flush=True)
    return row


def run_volume(task: str, name: str, image, mask, window, start, patterns, ks, keeps, seed=0) -> list[dict]:
    prep = dataclasses.replace(start.card.preprocess, window=window)
    pred = (segment(image, start, prep=prep, tta=None).labels == 1).astype(np.uint8)
    before = scores(pred, mask)[0]
    dice, wrong, present = per_item(pred, mask)
    rows = []
    for pattern in patterns:
        for k in ks:
            chosen = choose(pattern, dice, wrong, present, k)
            labels = pred.copy()
            labels[chosen] = mask[chosen]
            for keep in keeps:
                try:
                    outcome, secs = _finetune(start, [TrainingPair(image, labels, name, slices=chosen)], k, seed, keep)
                except NothingToLearn as exc:  # the chosen slices were all cleared: the panel refuses too
                    rows.append(_refused(f"{task} {name}", pattern, k, keep, before, chosen, str(exc)))
                    continue
                m = outcome.model
                p = segment(image, m, prep=dataclasses.replace(m.card.preprocess, window=window), tta=None)
                after = scores(p.labels == 1, mask)[0]
                rows.append(_row(f"{task} {name}", pattern, k, keep, before, after, outcome, secs, chosen))
    return rows


def run_images(task, items, start, patterns, ks, keeps, seed=0) -> list[dict]:
    preds = [(segment(im, start, tta=None).labels == 1).astype(np.uint8) for im, _ in items]
    dice = np.array([scores(p, t)[0] for p, (_, t) in zip(preds, items)])
    wrong = np.array([int((p.astype(bool) ^ t.astype(bool)).sum()) for p, (_, t) in zip(preds, items)])
    present = np.ones(len(items), bool)
    rows = []
    for pattern in patterns:
        for k in ks:
            chosen = choose(pattern, dice, wrong, present, k)
            pairs = [TrainingPair(items[i][0], items[i][1], f"item{i}", rgb=items[i][0].ndim == 3) for i in chosen]
            others = [items[i][0] for i in range(len(items)) if i not in chosen]
            for keep in keeps:
                outcome, secs = _finetune(start, pairs, k, seed, keep, context=others)
                m = outcome.model
                after = float(np.mean([scores(segment(im, m, tta=None).labels == 1, t)[0] for im, t in items]))
                rows.append(_row(task, pattern, k, keep, float(dice.mean()), after, outcome, secs, chosen))
    return rows


def run(task: str, patterns, ks, keeps, n_images: int = 30, tuning: bool = False, n_volumes: int = 1) -> list[dict]:
    start = load_model(STARTS[task], device="cpu")
    if task == "colondb":
        t = tasks(n_eval=n_images)["colondb"]
        items = [t.load(n) for n in t.eval[:n_images]]
        return run_images(task, items, start, patterns, ks, keeps)
    if tuning and task != "hippocampus":
        raise ValueError("--tuning holds hippocampus volumes only")
    vols = _ircad("liver")() if task == "liver" else _hippocampus(n_volumes, first=3 if tuning else 0)
    rows = []
    for name, image, mask, window in vols:
        rows += run_volume(task, name, image, mask, window, start, patterns, ks, keeps)
    return rows


def _said(change: dict) -> str:
    """What the change check says, recomputed from a row's counts with the current rule."""
    report = ChangeReport(["background", *change["classes"]], change["slices"], change["start_px"], change["new_px"],
                          change["agreement"])
    return "**drastic** " if report.drastic else "*notable* " if report.notable else ""


def markdown(rows: list[dict]) -> str:
    lines = ["| task | pattern | k | keep | Dice before → after | change check (outside the corrections) | s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["change"]
        said = "no uncorrected items" if c is None else (
            _said(c) + ", ".join(
                f"{cls} {s:,} → {n:,} px" for cls, s, n in zip(c["classes"], c["start_px"], c["new_px"]))
            + f", agreement {c['agreement']:.2f}")
        if r.get("refused"):
            said = "refused: the corrected slices hold no object"
        elif r["kept_start"]:
            said = "held-out check kept the start"
        lines.append(f"| {r['task']} | {r['pattern']} | {r['k']} | {r['keep']:g} | {r['before']:.3f} → "
                     f"{r['after']:.3f} | {said} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["liver", "hippocampus", "colondb"], choices=sorted(STARTS))
    ap.add_argument("--patterns", nargs="+", default=list(PATTERNS), choices=PATTERNS)
    ap.add_argument("--k", nargs="+", type=int, default=[1, 3, 5])
    ap.add_argument("--keep", nargs="+", type=float, default=[0.5])
    ap.add_argument("--tuning", action="store_true",
                    help="hippocampus volumes 4-6 (never in the reported table): where --keep is chosen")
    ap.add_argument("--volumes", type=int, default=1, help="hippocampus volumes (of the first three)")
    ap.add_argument("--margin-share", type=float, default=None,
                    help="slices near a correction left out of the held context, as a share of the depth "
                         "(default: llm4seg.anchor.MARGIN_SHARE)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--report", nargs="+", type=Path, help="print the table of earlier --json files and stop")
    args = ap.parse_args(argv)
    if args.report:
        print(markdown([r for f in args.report for r in json.loads(f.read_text())]))
        return 0
    if args.margin_share is not None:
        anchor.MARGIN_SHARE = args.margin_share
    rows = []
    for task in args.tasks:
        rows += run(task, args.patterns, args.k, args.keep, tuning=args.tuning, n_volumes=args.volumes)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
