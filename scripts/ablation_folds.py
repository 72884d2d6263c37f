"""Paired, cross-validated BUSI ablation: does the frozen LLM layer help, beyond the noise?

    python scripts/ablation_folds.py run --out runs/ablation [--folds 3] [--steps 1000] [--arms ...]
    python scripts/ablation_folds.py report runs/ablation [--metric dice] [--reference random]
                                            [--svg docs/images/ablation_folds.svg]

``run`` splits the 452 BUSI pairs into ``--folds`` seeded folds (the same for every arm) and trains each arm on
the other folds with one fixed schedule (CPU recipe: AdamW 2e-3, 100 warm-up steps, cosine; flips + rot90;
the *last* weights, so the reported fold never chooses anything), then scores every image of the held-out fold
(IoU and Dice at native size). All arms use the reference architecture (bilinear upsampling, sin/cos positions,
causal attention, no calibration) and start from the same CNN weights for a given fold:

* ``baseline``: CMUNeXt alone;  ``pretrained``: + the frozen SmolLM2-135M layer 15;
* ``random``: + a layer of the same shape, reference random init;  ``adapters``: + the two adapters, no layer.

Each (arm, fold) writes ``<out>/<arm>-fold<k>.json`` (per-image scores) and is skipped when that file exists,
so an interrupted run continues with the same command. ``report`` prints mean ± sd over folds per arm and the
paired per-image differences against the baseline with a bootstrap 95 % confidence interval over all images.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

ARMS = ("baseline", "pretrained", "random", "adapters")
LABELS = {"baseline": "CMUNeXt baseline", "pretrained": "+ frozen SmolLM2 layer 15",
          "random": "+ random layer (reference init)", "adapters": "+ adapters only, no layer"}
SHORT = {"baseline": "baseline", "pretrained": "+ SmolLM2\nlayer", "random": "+ random\nlayer",
         "adapters": "+ adapters\nonly"}


def folds_of(names: list[str], k: int, seed: int) -> list[list[str]]:
    """``k`` disjoint folds covering ``names`` (seeded permutation, sizes differing by at most one)."""
    order = np.random.default_rng(seed).permutation(len(names))
    return [sorted(names[i] for i in order[f::k]) for f in range(k)]


def model_config(arm: str):
    from llm4seg.llm import DEFAULT_LLM
    from llm4seg.model import ModelConfig

    if arm == "baseline":
        return ModelConfig.faithful(llm=None)
    return ModelConfig.faithful(llm=DEFAULT_LLM, llm_init={"pretrained": "pretrained", "random": "random",
                                                          "adapters": "none"}[arm])


def run_one(arm: str, fold: int, folds: list[list[str]], args: argparse.Namespace) -> dict:
    import torch

    from llm4seg.events import CancelToken, run_to_end
    from llm4seg.model import build_model
    from llm4seg.preprocess import Preprocessing
    from llm4seg.train import TrainConfig, build_slices, fit
    from llm4seg.train.sources import find_sources

    torch.set_num_threads(args.threads)
    sources, classes = find_sources(args.data)
    held = set(folds[fold])
    train_sources = [s for s in sources if s.name not in held]
    prep = Preprocessing(size=args.size)
    train = build_slices(train_sources, prep, classes)
    model = build_model(model_config(arm), seed=args.seed + fold)
    config = TrainConfig(preset="ablation", steps=args.steps, batch_size=8, optimizer="adamw", lr=2e-3,
                         weight_decay=1e-4, schedule="cosine", warmup_steps=min(100, args.steps // 10),
                         augment=True, select="last", seed=args.seed + fold, device="cpu", num_threads=args.threads)
    t0 = time.perf_counter()
    result = run_to_end(fit(model, train, None, config, CancelToken()), lambda e: None)
    seconds = time.perf_counter() - t0
    return {"arm": arm, "fold": fold, "steps": args.steps, "seconds": round(seconds, 1), "size": args.size,
            "seed": args.seed + fold, "images": score_held_out(result.model, sources, held, prep)}


def score_held_out(model, sources, held: set[str], prep, tta: str | None = None,
                   post=None) -> dict[str, dict[str, float]]:
    """IoU and Dice of ``model`` on each source named in ``held``, at the image's native size (``tta``: test-time
    augmentation as in ``segment``; ``post``: ``PostprocessOptions`` applied to the labels first)."""
    from llm4seg.infer import segment
    from llm4seg.postprocess import postprocess

    scores = {}
    for src in sources:
        if src.name not in held:
            continue
        image, labels = src.load()
        truth = labels > 0
        pred = segment(image, model, prep=prep, tta=tta).labels
        pred = (postprocess(pred, post) if post is not None else pred) == 1
        inter, union, total = (pred & truth).sum(), (pred | truth).sum(), pred.sum() + truth.sum()
        scores[src.name] = {"iou": float(inter / union) if union else 1.0,
                            "dice": float(2 * inter / total) if total else 1.0}
    return scores


def bootstrap_ci(diffs: np.ndarray, n: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of the mean of ``diffs`` over ``n`` resamples of the images."""
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(n, len(diffs)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def report(folder: Path, metric: str = "iou", arms: tuple[str, ...] = ARMS, labels: dict[str, str] = LABELS,
           reference: str = "baseline") -> tuple[str, dict]:
    """Markdown table: per-arm mean ± sd over the folds every arm has, and the paired per-image difference
    to the ``reference`` arm with its bootstrap CI."""
    runs: dict[str, dict[int, dict]] = {}
    for f in sorted(folder.glob("*-fold*.json")):
        r = json.loads(f.read_text())
        runs.setdefault(r["arm"], {})[r["fold"]] = r
    arms = [a for a in arms if a in runs]
    folds = sorted(set.intersection(*(set(runs[a]) for a in arms))) if arms else []
    lines = [f"| arm | {metric.upper()} per fold | mean ± sd over folds | Δ vs {reference} per image (95 % CI) "
             "| images |", "|---|---|---|---|---|"]
    summary = {}
    base = {n: v[metric] for k in folds for n, v in runs.get(reference, {}).get(k, {}).get("images", {}).items()}
    for arm in arms:
        per_fold = [float(np.mean([v[metric] for v in runs[arm][k]["images"].values()])) for k in folds]
        images = {n: v[metric] for k in folds for n, v in runs[arm][k]["images"].items()}
        delta = "-"
        if arm != reference and base:
            common = sorted(set(images) & set(base))
            d = np.array([images[n] - base[n] for n in common])
            lo, hi = bootstrap_ci(d)
            delta = f"{d.mean():+.4f} ({lo:+.4f} to {hi:+.4f})"
            summary[arm] = {"delta": float(d.mean()), "ci": [lo, hi]}
        sd = float(np.std(per_fold, ddof=1)) if len(per_fold) > 1 else 0.0
        lines.append(f"| {labels.get(arm, arm)} | {', '.join(f'{v:.4f}' for v in per_fold)} | {np.mean(per_fold):.4f} ± "
                     f"{sd:.4f} | {delta} | {len(images)} |")
        summary.setdefault(arm, {}).update(per_fold=per_fold, mean=float(np.mean(per_fold)), sd=sd)
    return "\n".join(lines), summary


def plot(folder: Path, out: Path, metric: str = "iou", arms: tuple[str, ...] = ARMS, names: dict[str, str] = SHORT,
         reference: str = "baseline", title: str = "BUSI ablation") -> None:
    """Two panels: each arm's held-out score per fold (lines pair the folds), and the paired per-image
    difference to the ``reference`` arm with its bootstrap 95 % interval. Needs matplotlib (``bench`` extra)."""
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    _, summary = report(folder, metric, arms, reference=reference)
    arms = [a for a in arms if a in summary]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [1.1, 1]})
    folds = np.array([summary[a]["per_fold"] for a in arms])  # (arms, folds)
    x = np.arange(len(arms))
    for k in range(folds.shape[1]):
        left.plot(x, folds[:, k], "o-", color="0.6", lw=0.8, ms=4, label="one fold" if k == 0 else None)
    left.errorbar(x, folds.mean(axis=1), yerr=folds.std(axis=1, ddof=1) if folds.shape[1] > 1 else None,
                  fmt="s", color="#1f77b4", capsize=4, label="mean ± sd over folds")
    left.set_xticks(x, [names.get(a, a) for a in arms], fontsize=8)
    left.set_ylabel(f"held-out {metric.upper()} (per-image mean)")
    left.legend(fontsize=7, loc="lower left")
    others = [a for a in arms if a != reference]
    y = np.arange(len(others))[::-1]
    deltas = [summary[a]["delta"] for a in others]
    lo = [summary[a]["delta"] - summary[a]["ci"][0] for a in others]
    hi = [summary[a]["ci"][1] - summary[a]["delta"] for a in others]
    right.errorbar(deltas, y, xerr=[lo, hi], fmt="o", color="#d62728", capsize=4)
    right.axvline(0.0, color="0.3", lw=0.8, ls="--")
    right.set_yticks(y, [names.get(a, a).replace("\n", " ") for a in others], fontsize=8)
    right.set_xlabel(f"{metric.upper()} − {names.get(reference, reference)}, per image (95 % bootstrap CI)")
    fig.suptitle(f"{title}, {folds.shape[1]} fold(s), each image scored when its fold is held out", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "busi")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--folds", type=int, default=3)
    r.add_argument("--steps", type=int, default=1000)
    r.add_argument("--size", type=int, default=128)
    r.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=2)
    q = sub.add_parser("report")
    q.add_argument("folder", type=Path)
    q.add_argument("--metric", choices=("iou", "dice"), default="iou")
    q.add_argument("--svg", type=Path, help="also draw the per-fold scores and the paired differences")
    q.add_argument("--reference", choices=ARMS, default="baseline", help="the arm the differences are taken to")
    args = ap.parse_args(argv)
    if args.command == "report":
        text, _ = report(args.folder, args.metric, reference=args.reference)
        print(text)
        if args.svg:
            plot(args.folder, args.svg, args.metric, reference=args.reference)
            print(f"wrote {args.svg}")
        return 0
    from llm4seg.train.sources import find_sources

    sources, _ = find_sources(args.data)
    folds = folds_of([s.name for s in sources], args.folds, args.seed)
    run_missing(run_one, args.arms, range(args.folds), folds, args)
    return 0


def run_missing(run: Callable, arms: list[str], which: Iterable[int], folds: list[list[str]],
                args: argparse.Namespace) -> None:
    """``run(arm, fold, folds, args)`` for each (arm, fold) without ``<out>/<arm>-fold<k>.json`` yet, fold by
    fold (so a partial study already pairs every arm on some folds); each result is written as it ends."""
    args.out.mkdir(parents=True, exist_ok=True)
    for fold in which:
        for arm in arms:
            path = args.out / f"{arm}-fold{fold}.json"
            if path.exists():
                continue
            result = run(arm, fold, folds, args)
            path.write_text(json.dumps(result, indent=1))
            scores = [v["iou"] for v in result["images"].values()]
            print(f"{arm} fold {fold}: IoU {np.mean(scores):.4f} over {len(scores)} images, {result['steps']} steps "
                  f"({result['seconds']} s)", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
