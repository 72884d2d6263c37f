"""Do the shipped models' cards reproduce? ``llm4seg evaluate`` on each card's scored sets, against its numbers.

    python -m benchmarks.cards [--models busi-lesion polyp ...] [--sets own_val ...] [--data ../shared/data] [--json F]

Each shipped checkpoint's card holds the mean IoU and Dice (and image count) of the sets it was scored on when it
was shipped (``heldout_<set>_*``: its own validation list and its held-out sets, see ``scripts/make_models.sh``).
This re-runs the real command line, ``python -m llm4seg evaluate DATA --checkpoint NAME [--list L] --no-hd95
--json``, on those sets and prints card and measured side by side. A difference above ``--tolerance`` (default
0.002, rounding and library versions) fails the run (exit status 1).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


@dataclass(frozen=True)
class CardSet:
    """One scored set of a card: metric prefix ``heldout_<label>_``, data folder, optional name list, options."""

    model: str
    label: str
    folder: str
    names: str | None = None
    options: tuple[str, ...] = ()


SPLITS = "scripts/splits"
SETS = (
    CardSet("busi-lesion", "own_val", "busi", f"{SPLITS}/busi-lesion.val.txt"),
    CardSet("gray-start", "own_val", "busi", f"{SPLITS}/busi-lesion.val.txt"),
    CardSet("isic-lesion", "own_val", "isic", f"{SPLITS}/isic-lesion.val.txt"),
    CardSet("isic-lesion", "isic_439", "isic", f"{SPLITS}/isic-lesion.heldout.txt"),
    CardSet("polyp", "own_val", "cvc_clinicdb", f"{SPLITS}/polyp.val.txt"),
    CardSet("polyp", "colondb", "cvc_colondb"),
    CardSet("thyroid", "own_val", "tg3k", f"{SPLITS}/thyroid.val.txt"),
    CardSet("thyroid", "tg3k_test", "tg3k", f"{SPLITS}/thyroid.heldout.txt"),
    CardSet("generalist", "tg3k_test", "tg3k", f"{SPLITS}/thyroid.heldout.txt"),
    CardSet("generalist", "colondb", "cvc_colondb"),
)


def card_metrics(model: str) -> dict[str, float]:
    """The metrics stored in a shipped model's card (read from the file's header, no weights loaded)."""
    from llm4seg.checkpoint import read_card
    from llm4seg.models import find_entry

    return dict(read_card(find_entry(model).path).metrics or {})


def evaluate(s: CardSet, data: Path) -> dict:
    """``llm4seg evaluate`` on one set, as a user would run it; its JSON."""
    cmd = [sys.executable, "-m", "llm4seg", "evaluate", str(data / s.folder), "--checkpoint", s.model,
           "--no-hd95", "--json", *s.options]
    if s.names:
        cmd += ["--list", str(REPO / s.names)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {(proc.stderr or proc.stdout).strip()[-400:]}")
    return json.loads(proc.stdout)


def measured(result: dict) -> dict[str, float]:
    """Mean IoU, Dice and the item count of an ``evaluate --json`` result (one foreground class)."""
    return {"iou": float(result["iou"]), "dice": float(result["dice"]), "n": int(result["n"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", help="only these shipped models")
    ap.add_argument("--sets", nargs="+", help="only these sets (e.g. own_val: each model's own validation list)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--tolerance", type=float, default=0.002)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    todo = [s for s in SETS if (not args.models or s.model in args.models) and (not args.sets or s.label in args.sets)]
    rows, worst = [], 0.0
    print("| model | set | images | card IoU / Dice | measured IoU / Dice | largest difference |")
    print("|---|---|---|---|---|---|")
    for s in todo:
        if not (args.data / s.folder).is_dir():
            print(f"| {s.model} | {s.label} | – | – | – | skipped: no {args.data / s.folder} |")
            continue
        card = card_metrics(s.model)
        want = {k: card.get(f"heldout_{s.label}_{k}") for k in ("iou", "dice", "n")}
        got = measured(evaluate(s, args.data))
        diff = max(abs(got[k] - want[k]) for k in ("iou", "dice") if want[k] is not None) if want["iou"] else None
        worst = max(worst, diff or 0.0)
        rows.append({"model": s.model, "set": s.label, "card": want, "measured": got, "difference": diff})
        shown = f"{want['iou']:.4f} / {want['dice']:.4f}" if want["iou"] is not None else "not on the card"
        print(f"| {s.model} | {s.label} | {got['n']} (card {want['n']}) | {shown} | {got['iou']:.4f} / "
              f"{got['dice']:.4f} | {'–' if diff is None else f'{diff:.4f}'} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    ok = worst <= args.tolerance
    print(f"\n{'all within' if ok else 'NOT within'} {args.tolerance:g} of the cards (largest difference {worst:.4f})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
