"""BUSI ablation report: a Markdown table and an SVG plot of the validation curves of several training runs.

    python scripts/ablation_report.py "CMUNeXt baseline=runs/ablation-no-llm.safetensors" \\
        "+ frozen SmolLM2 layer=runs/busi-lesion.safetensors" "+ random layer=runs/ablation-random-llm.safetensors" \\
        --svg docs/images/ablation_busi.svg

Each run's history (loss and validation IoU/Dice per evaluation) is read from the training-state file next to
its checkpoint; the table row from its model card (best validation IoU/Dice, step, trainable parameters).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from llm4seg.checkpoint import load_checkpoint  # noqa: E402
from llm4seg.train.state import load_state, state_path_for  # noqa: E402

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]


def run_info(label: str, path: Path) -> dict:
    model = load_checkpoint(path, device="cpu")
    state = load_state(state_path_for(path))
    frozen = sum(p.numel() for p in model.booster.layer.parameters()) if model.booster is not None else 0
    trainable = sum(p.numel() for p in model.parameters()) - frozen
    card = model.card
    return {"label": label, "history": state.history, "metrics": card.metrics, "training": card.training,
            "trainable": trainable, "frozen": frozen, "batch": int(state.config.get("batch_size", 8))}


def table(runs: list[dict]) -> str:
    lines = ["| model | trainable params | frozen params | best val IoU | val Dice | at step |",
             "|---|---|---|---|---|---|"]
    for r in runs:
        m, t = r["metrics"], r["training"]
        lines.append(f"| {r['label']} | {r['trainable'] / 1e6:.2f} M | {r['frozen'] / 1e6:.2f} M | "
                     f"{m.get('val_iou', float('nan')):.4f} | {m.get('val_dice', float('nan')):.4f} | "
                     f"{t.get('best_step')} / {t.get('total_steps')} |")
    return "\n".join(lines)


def svg(runs: list[dict], per_epoch: float, width: int = 720, height: int = 360) -> str:
    """Validation IoU (solid) per epoch for each run."""
    left, right, top, bottom = 60, 200, 20, 45
    pw, ph = width - left - right, height - top - bottom
    curves = [[(s / per_epoch, v) for s, v in r["history"].get("val_iou", [])] for r in runs]
    xmax = max((x for c in curves for x, _ in c), default=1.0)
    ymax = min(1.0, max((y for c in curves for _, y in c), default=1.0) * 1.1 + 1e-9)
    sx = lambda x: left + pw * x / xmax  # noqa: E731
    sy = lambda y: top + ph * (1 - y / ymax)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="12"><rect width="100%" height="100%" fill="white"/>']
    for i in range(6):
        y = ymax * i / 5
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.2f}</text>')
    step = max(1, round(xmax / 7))
    for e in range(0, int(xmax) + 1, step):
        out.append(f'<text x="{sx(e):.1f}" y="{top + ph + 16}" text-anchor="middle">{e}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle">epoch</text>'
               f'<text x="14" y="{top + ph / 2}" transform="rotate(-90 14 {top + ph / 2})" '
               f'text-anchor="middle">validation IoU</text>'
               f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    for i, (r, c) in enumerate(zip(runs, curves)):
        colour = COLOURS[i % len(COLOURS)]
        pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in c)
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<line x1="{left + pw + 12}" x2="{left + pw + 32}" y1="{top + 14 + 20 * i}" '
                   f'y2="{top + 14 + 20 * i}" stroke="{colour}" stroke-width="2"/>'
                   f'<text x="{left + pw + 38}" y="{top + 18 + 20 * i}">{r["label"]}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="LABEL=CHECKPOINT")
    ap.add_argument("--svg", type=Path, help="write the validation-IoU curves here")
    args = ap.parse_args(argv)
    runs = [run_info(*item.split("=", 1)[:1], Path(item.split("=", 1)[1])) for item in args.runs]
    print(table(runs))
    if args.svg:
        t = runs[0]["training"]
        per_epoch = int(t.get("train_items", 1)) / runs[0]["batch"]  # steps per epoch
        args.svg.write_text(svg(runs, per_epoch))
        print(f"\nwrote {args.svg}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
