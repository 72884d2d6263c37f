"""Correcting with clicks: ``python -m benchmarks.clicks [--quick] [--sets S ...] [--n N] [--click-model M]``.

A simulated user (``llm4seg.interactive.next_click``: the centre of the largest error, positive where the
object was missed, negative where it was not there) corrects each image, starting from the automatic mask
of the model in use, with at most 20 clicks, stopping at IoU 0.90. Arms:
- ``auto``: the set's shipped automatic model alone (no clicks);
- ``seeds``: the training-free fallback on that model (``refine(method="seeds")``);
- ``clicks``: the click-conditioned model (``refine`` with prompt channels and its defaults), from its own
  automatic mask; optional: ``clicks-on-auto`` (the click model correcting the set's automatic model's mask, as
  the panel does), ``clicks-raw`` (the network's mask as it is, no ``honour_clicks``),
  ``clicks-zoom`` and ``clicks-zoom-honour`` (RITM's zoom-in, without and with ``honour_clicks``).
Reports NoC@85 / NoC@90 (clicks to reach IoU 0.85 / 0.90; 0 when the automatic mask already does, 20 when
never; mean with a bootstrap 95 % interval), Dice after 0, 1, 3 and 5 clicks, and the time of one ``refine``
call per click (median, p95; the image's model input is prepared once per image, as the panel does).
``--quick`` (≤ 10 min on 2 CPU cores): 12 cases per set. Writes ``bench-results/clicks-<time>.json``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from llm4seg.interactive import Click, iou, next_click, prepare, refine

from .click_sets import REPORTED, SETS, Case, cases

MAX_CLICKS = 20
ARMS = ("auto", "seeds", "clicks")
#: the click model correcting the set's automatic model's mask (the panel's way); its output as it is (no honour_clicks); with RITM's zoom-in, with and without honour_clicks
OPTIONAL_ARMS = ("clicks-on-auto", "clicks-raw", "clicks-zoom", "clicks-zoom-honour")
REPO = Path(__file__).resolve().parents[1]


def session(model, case: Case, method: str | None, max_clicks: int = MAX_CLICKS, stop_at: float = 0.90,
            zoom: bool = False, honour: bool = True, start_model=None) -> dict:
    """IoU after 0..k clicks and the seconds of each ``refine`` call; ``method`` None: no clicks. The clicks
    start from ``start_model``'s automatic mask (default: ``model``'s)."""
    inp = prepare(case.image, model, z=case.z, window=case.window)
    if start_model is not None:
        mask = refine(case.image, start_model, [], z=case.z, window=case.window)
    else:
        mask = refine(case.image, model, [], prepared=inp, z=case.z)
    ious, times, clicks = [iou(mask, case.target)], [], []
    while method is not None and len(clicks) < max_clicks and ious[-1] < stop_at:
        c = next_click(mask, case.target)
        if c is None:
            break
        clicks.append(Click(c.y, c.x, c.positive, case.z))
        t0 = time.perf_counter()
        mask = refine(case.image, model, clicks, previous=mask, prepared=inp, z=case.z, method=method, zoom=zoom,
                      honour=honour)
        times.append(time.perf_counter() - t0)
        ious.append(iou(mask, case.target))
    return {"case": case.name, "ious": ious, "times": times}


def noc(ious: list[float], threshold: float, max_clicks: int = MAX_CLICKS) -> int:
    """Clicks until IoU reaches ``threshold`` (0: the automatic mask did), ``max_clicks`` when never."""
    return next((k for k, v in enumerate(ious) if v >= threshold), max_clicks)


def _after(ious: list[float], k: int) -> float:
    v = ious[min(k, len(ious) - 1)]  # a session that stopped early keeps its last mask
    return 2 * v / (1 + v)


def _ci(values: np.ndarray, reps: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    means = rng.choice(values, (reps, len(values))).mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarise(runs: list[dict]) -> dict:
    """NoC, Dice after 0/1/3/5 clicks and refine times over the sessions of one arm and set."""
    out: dict = {"n": len(runs)}
    for t in (0.85, 0.90):
        v = np.array([noc(r["ious"], t) for r in runs], float)
        out[f"noc{int(t * 100)}"], out[f"noc{int(t * 100)}_ci"] = float(v.mean()), _ci(v)
    for k in (0, 1, 3, 5):
        out[f"dice{k}"] = float(np.mean([_after(r["ious"], k) for r in runs]))
    times = [t for r in runs for t in r["times"]]
    out["ms_median"] = 1e3 * float(np.median(times)) if times else None
    out["ms_p95"] = 1e3 * float(np.percentile(times, 95)) if times else None
    out["curve"] = [float(np.mean([r["ious"][min(k, len(r["ious"]) - 1)] for r in runs])) for k in range(MAX_CLICKS + 1)]
    return out


def click_times(click_model: str, sizes: tuple[int, ...] = (128, 256), clicks: int = 30) -> dict:
    """Median and p95 milliseconds of one ``refine`` call (a click on the BUSI sample, the image prepared once)
    with the click model at its own input size and at other sizes (same weights, the card's size changed)."""
    import dataclasses

    from llm4seg.io import read_image
    from llm4seg.models import load_model

    image = read_image(REPO / "sample_data" / "busi" / "images" / "benign (100).png").array
    truth = read_image(REPO / "sample_data" / "busi" / "masks" / "0" / "benign (100).png").array > 0
    out = {}
    for size in sizes:
        model = load_model(click_model, device="cpu")
        model.card.preprocessing = dataclasses.replace(model.card.preprocess, size=size).to_dict()
        inp = prepare(image, model)
        mask, times = refine(image, model, [], prepared=inp), []
        for k in range(clicks):
            c = next_click(mask, truth) or Click(10, 10, False)
            t0 = time.perf_counter()
            mask = refine(image, model, [c], previous=mask, prepared=inp)
            times.append(time.perf_counter() - t0)
        out[size] = {"ms_median": 1e3 * float(np.median(times[3:])), "ms_p95": 1e3 * float(np.percentile(times[3:], 95))}
    return out


def run(sets: list[str], n: int | None, click_model: str, arms: list[str]) -> dict:
    from llm4seg.models import load_model

    results: dict = {}
    click = load_model(click_model, device="cpu") if any(a.startswith("clicks") for a in arms) else None
    for name in sets:
        spec = SETS[name]
        auto = load_model(spec.auto_model, device="cpu") if {"auto", "seeds", "clicks-on-auto"} & set(arms) else None
        per_arm: dict = {a: [] for a in arms}
        for case in cases(name, n):
            for arm in arms:
                model = click if arm.startswith("clicks") else auto
                method = {"auto": None, "seeds": "seeds"}.get(arm, "network")
                per_arm[arm].append(session(model, case, method, zoom="zoom" in arm,
                                              honour=arm in ("clicks", "clicks-on-auto", "clicks-zoom-honour"),
                                              start_model=auto if arm == "clicks-on-auto" else None))
        results[name] = {arm: {**summarise(r), "model": (f"{spec.auto_model} → {click_model}" if arm == "clicks-on-auto"
                                         else click_model if arm.startswith("clicks") else spec.auto_model),
                               "sessions": r} for arm, r in per_arm.items()}
        print(table({name: results[name]}), flush=True)
    return results


def table(results: dict) -> str:
    head = ("| set | arm | model | n | NoC@85 (95 % CI) | NoC@90 | Dice 0 / 1 / 3 / 5 clicks | ms per click (median / p95) |\n"
            "|---|---|---|---|---|---|---|---|")
    rows = []
    for name, arms in results.items():
        for arm, s in arms.items():
            ms = "–" if s["ms_median"] is None else f"{s['ms_median']:.0f} / {s['ms_p95']:.0f}"
            lo, hi = s["noc85_ci"]
            rows.append(f"| {SETS[name].what} | {arm} | {s['model']} | {s['n']} | {s['noc85']:.2f} ({lo:.2f}–{hi:.2f}) | "
                        f"{s['noc90']:.2f} | {s['dice0']:.3f} / {s['dice1']:.3f} / {s['dice3']:.3f} / {s['dice5']:.3f} | {ms} |")
    return "\n".join([head, *rows])


def plot(results: dict, path: Path) -> None:
    """Mean IoU after 0..20 clicks, one panel per set, one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3.0), sharey=True, squeeze=False)
    for ax, (name, arms) in zip(axes[0], results.items()):
        for arm, s in arms.items():
            ax.plot(range(MAX_CLICKS + 1), s["curve"], label=f"{arm} ({s['model']})")
        ax.set_title(SETS[name].what, fontsize=8)
        ax.set_xlabel("clicks")
        ax.axhline(0.85, color="gray", lw=0.5, ls=":")
        ax.legend(fontsize=6, loc="lower right")
    axes[0][0].set_ylabel("mean IoU")
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.clicks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="12 cases per set (≤ 10 min on 2 CPU cores)")
    p.add_argument("--sets", nargs="+", default=list(REPORTED), choices=list(SETS),
                   help="sets to run (default: the reported ones; isic-val and clinicdb-val tune refine's options)")
    p.add_argument("--report", nargs="+", metavar="JSON", help="print one table from earlier result files and stop")
    p.add_argument("--plot", metavar="SVG", help="with --report: also plot the IoU curves into this file")
    p.add_argument("--times", action="store_true", help="only time one click of the click model at 128² and 256²")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS + OPTIONAL_ARMS))
    p.add_argument("--n", type=int, default=None, help="cases per set (default: all; --quick: 12)")
    p.add_argument("--click-model", default="generalist-clicks", help="a shipped click model or a .safetensors")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(REPO / "bench-results"))
    args = p.parse_args(argv)
    if args.report:
        merged: dict = {}
        for f in args.report:
            for name, arms in json.loads(Path(f).read_text())["results"].items():
                merged.setdefault(name, {}).update(arms)
        print(table(merged))
        if args.plot:
            plot(merged, Path(args.plot))
        return 0
    torch.set_num_threads(args.threads)
    if args.times:
        for size, t in click_times(args.click_model).items():
            print(f"{args.click_model} at {size}²: {t['ms_median']:.0f} ms median, {t['ms_p95']:.0f} ms p95 per click")
        return 0
    n = args.n if args.n is not None else (12 if args.quick else None)
    started = time.perf_counter()
    results = run(args.sets, n, args.click_model, args.arms)
    print(f"\n{table(results)}\n\n{time.perf_counter() - started:.0f} s in all")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"clicks-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"n": n, "click_model": args.click_model, "results": results}, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
