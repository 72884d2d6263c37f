"""How often the Segment tab's model hint names the right kind of image (``llm4seg.modality``), per data set.

    python -m benchmarks.modality [--data ../shared/data] [--limit N]

Every image (or volume) of each shared data set is read as the plugin's reader reads it and classified from
its pixels; a row per data set with the share guessed right, and what the others were taken for.
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

from llm4seg.io import read_image
from llm4seg.modality import guess_modality

SETS = (("busi", "ultrasound"), ("tg3k", "ultrasound"), ("isic", "dermoscopy"), ("cvc_clinicdb", "colonoscopy"),
        ("cvc_colondb", "colonoscopy"), ("ircad17", "CT"), ("hippocampus", "MR"))


def files(root: Path) -> list[Path]:
    folder = root / "images"
    if folder.is_dir():
        return sorted(p for p in folder.iterdir() if p.is_file())
    return sorted(root.glob("*.nii*"))[:1]  # ircad17: the CT volume (labels.nii.gz is its label map)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--limit", type=int, default=0, help="at most this many items per data set (0: all)")
    args = ap.parse_args(argv)
    print("| data set | modality | items | right | taken for |")
    print("|---|---|---|---|---|")
    for name, truth in SETS:
        paths = files(args.data / name)
        paths = paths[:args.limit] if args.limit else paths
        if name == "ircad17":
            paths = [args.data / name / "ct.nii.gz"]
        seen: collections.Counter = collections.Counter()
        for path in paths:
            image = read_image(path)
            seen[guess_modality(np.asarray(image.array), rgb=bool(image.rgb))] += 1
        n = sum(seen.values())
        others = ", ".join(f"{k or 'nothing'} {v}" for k, v in seen.most_common() if k != truth) or "–"
        print(f"| {name} | {truth} | {n} | {100 * seen[truth] / max(1, n):.1f} % | {others} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
