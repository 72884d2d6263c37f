"""Two checkpoints on the same images: per-image Dice/IoU and the paired difference with a bootstrap 95 % CI.

    python scripts/compare_checkpoints.py DATA NEW OLD [--list names.txt] [--json out.json] [--tta-new flips]
                                          [--post-new largest fill]

``NEW``/``OLD``: checkpoint files or shipped names. Each image is segmented at its native size with the card's
preprocessing (foreground = label 1, truth = any label > 0) and scored once per model; the table gives both
means and NEW − OLD with its interval (10 000 resamples of the images). Use it to decide whether a re-trained
model beats the one that ships on a set neither trained on. ``--tta-new`` / ``--tta-old`` segment with test-time
augmentation (``flips`` or ``d4``), ``--post-new`` / ``--post-old`` clean the masks up as the Segment widget can
(``largest`` component, ``fill`` holes): NEW = OLD with ``--tta-new flips`` measures what the flips buy on one
model.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ablation_folds import bootstrap_ci, score_held_out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("new")
    ap.add_argument("old")
    ap.add_argument("--list", type=Path, help="names (one per line) of the images to score (default: all)")
    ap.add_argument("--json", type=Path, help="write the per-image scores and the summary")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tta-new", choices=["flips", "d4"], default=None, help="test-time augmentation for NEW")
    ap.add_argument("--tta-old", choices=["flips", "d4"], default=None, help="test-time augmentation for OLD")
    ap.add_argument("--post-new", nargs="+", default=[], choices=["largest", "fill"], help="clean-up for NEW")
    ap.add_argument("--post-old", nargs="+", default=[], choices=["largest", "fill"], help="clean-up for OLD")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from llm4seg.models import load_model
    from llm4seg.postprocess import PostprocessOptions
    from llm4seg.train.sources import find_sources

    sources, _ = find_sources(args.data)
    names = set(args.list.read_text().split("\n")) - {""} if args.list else {s.name for s in sources}
    per = {}
    for which in ("new", "old"):
        model = load_model(getattr(args, which), device="cpu")
        post = getattr(args, f"post_{which}")
        cleanup = PostprocessOptions(largest="largest" in post, fill_holes="fill" in post) if post else None
        per[which] = score_held_out(model, sources, names, model.card.preprocess, tta=getattr(args, f"tta_{which}"),
                                    post=cleanup)
    common = sorted(set(per["new"]) & set(per["old"]))
    print(f"{len(common)} images of {args.data}\n")
    print(f"| metric | {args.new} | {args.old} | new − old (95 % CI) |\n|---|---|---|---|")
    summary = {}
    for metric in ("dice", "iou"):
        new = np.array([per["new"][n][metric] for n in common])
        old = np.array([per["old"][n][metric] for n in common])
        lo, hi = bootstrap_ci(new - old)
        summary[metric] = {"new": float(new.mean()), "old": float(old.mean()), "diff": float((new - old).mean()),
                           "ci": [lo, hi]}
        print(f"| {metric} | {new.mean():.3f} | {old.mean():.3f} | {(new - old).mean():+.3f} "
              f"({lo:+.3f} to {hi:+.3f}) |")
    if args.json:
        args.json.write_text(json.dumps({"data": str(args.data), "new": args.new, "old": args.old,
                                         "summary": summary, "images": per}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
