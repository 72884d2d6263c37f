"""Does "Label this next" pick better slices? 5 labelled slices chosen several ways, then a quick fine-tune.

    python -m benchmarks.fewshot_suggest [--tasks liver hippocampus] [--base default] [--seeds 0 1 2]
                                         [--ways even random suggested corrected output cleared] [--min-area 0.25]

* even: 5 slices spread evenly over the structure (what a careful user does by hand);
* random: 5 random slices of the structure's extent (seeded);
* suggested: 2 even slices, a quick fine-tune, then the 3 slices ``llm4seg.suggest`` ranks first (over the
  whole volume, as the widget does), and a fine-tune of the base on all 5; a suggested slice without the
  structure adds nothing (only slices with labels train);
* corrected: the widget's second round: the Segment output of the first fine-tune, its 3 suggested slices
  corrected, pairs with the image and only those slices train (``TrainingPair.slices``), also when the
  correction left them empty (a false object erased);
* output: the same, but every slice of the corrected output with labels trains, the uncorrected predictions
  too (the widget before it trained on corrected slices only);
* cleared: 5 even slices, a quick fine-tune, then the user erases the false objects on the 2 slices outside the
  structure where the fine-tuned model draws most (``TrainingPair.slices``: those train as all background), and
  a fine-tune of the base on the 5 + 2 (7 slices of effort; scored on the slices other than the 7);
* worst: 5 even slices, then rounds of correction as a user who looks at the whole volume makes them: each round
  segments with the last fine-tune, the user corrects the one slice with the most wrong pixels (false objects
  and misses, empty slices included: ``TrainingPair.slices``, so an erased slice trains as background), and the
  base is fine-tuned again on all slices labelled so far. Columns ``worst1``, ``worst2``: after 1 and 2
  corrections (``--rounds``; scored on the slices other than the 6 or 7 labelled);
* beyond: the same rounds, but the slice corrected is the one ``llm4seg.suggest.beyond_labels`` ranks first (the
  model's largest drawing beyond the labelled slices, 2 slices apart from them, as the panel lists it), and
  only when most of that drawing is not the structure (the panel asks the user to check and erase it if not;
  otherwise the round changes nothing). Columns ``beyond1``, ``beyond2``.
Dice is pooled over all other slices of the volume (not the 5). Hippocampus seeds take different volumes.
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
from llm4seg.suggest import beyond_labels, suggest_slices

from .fewshot import load_base, scores, slice_errors
from .fewshot_tasks import pick_slices, tasks


WAYS = ("even", "random", "suggested", "corrected", "output", "cleared", "worst", "beyond")
ROUNDS = 2  # corrections of the "worst" and "beyond" ways (--rounds)


def _tune(model, image, mask, chosen, prep, seed, slices=None, output=None):
    sparse = np.zeros_like(mask)
    sparse[chosen] = mask[chosen]
    pairs = [TrainingPair(image, sparse, name="v", slices=slices)]
    if output is not None:  # the corrected Segment output as a second pair, as the widget pairs it
        pairs = [TrainingPair(image, sparse, name="v"), TrainingPair(image, output, name="out")]
    plan = summarise(pairs, model.card.classes)
    return run_to_end(finetune(model, plan, preset_config("quick", seed=seed), prep=prep)).model


def _predict(model, image, window) -> np.ndarray:
    """The volume's labels from ``model`` in the task's CT window."""
    return segment(image, model, prep=dataclasses.replace(model.card.preprocess, window=window)).labels


def _dice(pred, mask, chosen) -> float:
    """Dice of class 1, pooled over the slices not in ``chosen``."""
    others = np.setdiff1d(np.arange(len(mask)), chosen)
    return scores(pred[others] == 1, mask[others])[0]


def _score(model, image, mask, chosen, window):
    return _dice(_predict(model, image, window), mask, chosen)


def _cleared(base, image, mask, chosen, prep, window, seed, n: int = 2) -> tuple[float, list[int]]:
    """Dice after a second fine-tune that also learns the ``n`` empty slices the first one gets most wrong."""
    pred = _predict(_tune(base, image, mask, chosen, prep, seed), image, window)
    false = np.where(mask.reshape(len(mask), -1).any(axis=1), 0, (pred == 1).reshape(len(pred), -1).sum(axis=1))
    erased = [int(z) for z in np.argsort(-false)[:n] if false[z] > 0]
    both = sorted(set(chosen) | set(erased))
    return _score(_tune(base, image, mask, both, prep, seed, slices=both), image, mask, both, window), erased


def worst_slice(pred: np.ndarray, mask: np.ndarray, labelled: list[int]) -> int:
    """The unlabelled slice with the most wrong pixels (false objects and misses; empty slices count too)."""
    wrong = np.add(*slice_errors(pred, mask))
    wrong[list(labelled)] = -1
    return int(np.argmax(wrong))


def beyond_slice(pred: np.ndarray, mask: np.ndarray, labelled: list[int]) -> int | None:
    """The slice :func:`llm4seg.suggest.beyond_labels` ranks first, as the panel lists it (2 slices apart from the
    labelled ones), when the user, as the panel asks, finds that most of what is drawn there is not the
    structure (precision below 0.5: then it is corrected); None when there is none or the drawing is right."""
    found = beyond_labels(pred, labelled, 1)
    if not found:
        return None
    z = found[0].z
    drawn = pred[z].astype(bool)
    return z if (drawn & mask[z].astype(bool)).sum() < 0.5 * drawn.sum() else None


def _rounds(base, image, mask, chosen, prep, window, seed, pick=worst_slice, rounds: int = ROUNDS
            ) -> tuple[list[float], list[int]]:
    """Dice after each of ``rounds`` corrections of the slice ``pick(pred, mask, labelled)`` names (the slice the
    last fine-tune gets most wrong by default), and those slices; a round without a slice to correct repeats."""
    labelled, added, dice = list(chosen), [], []
    pred = _predict(_tune(base, image, mask, labelled, prep, seed), image, window)
    for _ in range(rounds):
        z = pick(pred == 1, mask, labelled)
        if z is not None:
            added.append(z)
            labelled = sorted(labelled + [z])
            pred = _predict(_tune(base, image, mask, labelled, prep, seed, slices=labelled), image, window)
        dice.append(_dice(pred, mask, labelled))
    return dice, added


def run(task_name: str, base_name: str, seed: int, ways: list[str], min_area: float = 0.25, rounds: int = ROUNDS
        ) -> dict:
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
    for how in ("even", "random"):
        if how in ways:
            out[how] = _score(_tune(base, image, mask, picks[how], prep, seed), image, mask, picks[how], window)
    if "cleared" in ways:
        out["cleared"], out["cleared_slices"] = _cleared(base, image, mask, picks["even"], prep, window, seed)
    for way, pick in (("worst", worst_slice), ("beyond", beyond_slice)):
        if way in ways:
            dice, out[f"{way}_slices"] = _rounds(base, image, mask, picks["even"], prep, window, seed, pick, rounds)
            out.update({f"{way}{i + 1}": d for i, d in enumerate(dice)})
    if not {"suggested", "corrected", "output"} & set(ways):
        print(out, flush=True)
        return out
    t = time.perf_counter()
    first = pick_slices(mask, 2, 0)
    tuned = _tune(base, image, mask, first, prep, seed)
    seg = segment(image, tuned, prep=dataclasses.replace(tuned.card.preprocess, window=window), return_probs=True)
    added = [s.z for s in suggest_slices(seg.probs, first, 3, min_area=min_area)]
    chosen = sorted(first + added)
    out["suggested_slices"], out["suggest_s"] = chosen, time.perf_counter() - t
    out["suggested_empty"] = int(sum(not mask[z].any() for z in added))
    corrected = seg.labels.astype(mask.dtype)
    corrected[added] = mask[added]
    corrected[first] = 0  # the painted slices are in the first pair
    variants = {"suggested": {}, "corrected": {"slices": chosen}, "output": {"output": corrected}}
    for how, extra in variants.items():
        if how in ways:
            out[how] = _score(_tune(base, image, mask, chosen, prep, seed, **extra), image, mask, chosen, window)
    print(out, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["liver", "hippocampus"])
    ap.add_argument("--base", default="default")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-area", type=float, default=0.25, help="suggest_slices(min_area=...)")
    ap.add_argument("--rounds", type=int, default=ROUNDS, help="corrections of the worst / beyond ways")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [run(t, args.base, s, args.ways, args.min_area, args.rounds) for t in args.tasks for s in args.seeds]
    print(f"\n5 labelled slices, quick fine-tune from {args.base} (min_area {args.min_area}): Dice on the other slices "
          "(mean ± sd over seeds)\n")
    ways = [w for w in WAYS if w in args.ways and w not in ("worst", "beyond")]
    ways += [f"{w}{i + 1}" for w in ("worst", "beyond") if w in args.ways for i in range(args.rounds)]
    print(f"| task | {' | '.join(ways)} | seeds |\n|---|{'---|' * len(ways)}---|")
    for t in args.tasks:
        rs = [r for r in rows if r["task"] == t]
        cells = []
        for how in ways:
            v = [r[how] for r in rs]
            cells.append(f"{statistics.fmean(v):.3f} ± {statistics.stdev(v) if len(v) > 1 else 0:.3f}")
        print(f"| {t} | {' | '.join(cells)} | {len(rs)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
