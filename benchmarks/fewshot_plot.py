"""Curves of a few-shot benchmark run: Dice vs labelled items and Dice vs fine-tuning seconds, one panel per task.

    python -m benchmarks.fewshot_plot RESULTS.json [MORE.json ...] --out docs/img/fewshot.svg

Each JSON file is written by ``python -m benchmarks.fewshot --json``; runs of several files are merged
(e.g. one file per base or preset). Lines are (base, preset) pairs; error bars are the sd over seeds.
Needs matplotlib (``pip install -e '.[bench]'``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .fewshot import summary


def _series(files: list[Path]) -> dict[str, dict[str, list[dict]]]:
    """{task: {label: summary rows sorted by k}}"""
    out: dict[str, dict[str, list[dict]]] = {}
    for f in files:
        data = json.loads(f.read_text())
        tag = data.get("label") or data["preset"] + (f" {data['overrides']}" if data.get("overrides") else "")
        for row in summary(data["rows"]):
            label = f"{row['base']} · {tag}"
            out.setdefault(row["task"], {}).setdefault(label, []).append(row)
    for task in out.values():
        for rows in task.values():
            rows.sort(key=lambda r: r["k"])
    return out


def plot(files: list[Path], out: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    series = _series(files)
    tasks = sorted(series)
    fig, axes = plt.subplots(2, len(tasks), figsize=(3.2 * len(tasks), 6), squeeze=False)
    for col, task in enumerate(tasks):
        for label, rows in sorted(series[task].items()):
            ks = [r["k"] for r in rows]
            dice = [r["dice"][0] for r in rows]
            sd = [r["dice"][1] for r in rows]
            secs = [r["train_s"][0] for r in rows]
            axes[0][col].errorbar(ks, dice, yerr=sd, marker="o", capsize=3, label=label)
            axes[1][col].errorbar(secs, dice, yerr=sd, marker="o", linestyle="none", capsize=3, label=label)
        axes[0][col].set_title(task)
        axes[0][col].set_xlabel("labelled items k")
        axes[1][col].set_xlabel("fine-tuning seconds")
        for ax in (axes[0][col], axes[1][col]):
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
        axes[0][col].set_ylabel("Dice") if col == 0 else None
    axes[0][0].legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="svg")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--title", default="")
    args = ap.parse_args(argv)
    plot(args.results, args.out, args.title)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
