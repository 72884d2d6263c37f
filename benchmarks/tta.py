"""What test-time augmentation buys: Dice and time without TTA, with flips and with the 8 square symmetries.

    python -m benchmarks.tta [--checkpoint generalist] [--sets tg3k_test colondb] [--n 200]

Data sets the checkpoint never trained on (``../shared/data``): TG3K ``test_*`` frames and CVC-ColonDB. Per-image
Dice, mean over the first ``n`` items of each set (by name), segmented one image at a time as the widget does.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from llm4seg.infer import segment
from llm4seg.models import load_model

from .fewshot import scores
from .fewshot_tasks import DATA, _folder_loader, _names

SETS = {"tg3k_test": ("tg3k", lambda n: n.startswith("test_"), False),
        "colondb": ("cvc_colondb", lambda n: True, True),
        "busi": ("busi", lambda n: True, False)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="generalist")
    ap.add_argument("--sets", nargs="+", default=["tg3k_test", "colondb"], choices=sorted(SETS))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint, device="cpu")
    print(f"\nTest-time augmentation, {args.checkpoint}: per-image Dice (mean) and seconds per image\n")
    print("| set | n | no TTA | flips (3 passes) | 8 symmetries | s/image: none / flips / d4 |")
    print("|---|---|---|---|---|---|")
    for name in args.sets:
        folder, keep, rgb = SETS[name]
        load = _folder_loader(DATA / folder, rgb)
        items = [load(n) for n in [n for n in _names(DATA / folder) if keep(n)][: args.n]]
        cells, times = [], []
        for tta in (None, "flips", "d4"):
            t = time.perf_counter()
            dice = [scores(segment(img, model, tta=tta).labels == 1, mask)[0] for img, mask in items]
            times.append((time.perf_counter() - t) / len(items))
            cells.append(f"{np.mean(dice):.3f}")
        print(f"| {name} | {len(items)} | {' | '.join(cells)} | {' / '.join(f'{s:.3f}' for s in times)} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
