"""Simulated correction sessions beyond one image: ``python -m benchmarks.click_sessions ct|loop [...]``.

``ct``: time to a good mask on the CT sample's full volume (ircad17, liver + tumour + intrahepatic vessels):
segment with ``ct-liver``, correct ``--slices`` evenly spread slices with at most ``--clicks`` clicks each
(the click model, from the automatic mask), then (a) propagate each corrected slice up and down, (b) quick
fine-tune ``ct-liver`` on the corrected slices and segment the volume again. Dice of the whole volume after
each stage, and the seconds of compute (model, clicks, fine-tuning; reading the file excluded).

``loop``: the human-in-the-loop over a cohort (cellpose 2.0, in clicks). The simulated user corrects images
one after another to IoU 0.85 (at most 20 clicks) with the click model; every ``--every`` images the
corrected images fine-tune the model (quick preset) and the next images start from the fine-tuned model.
Clicks per image in blocks of ``--every``, with and without the fine-tuning.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch

from llm4seg.events import run_to_end
from llm4seg.finetune import TrainingPair, finetune, preset_config, summarise
from llm4seg.infer import segment
from llm4seg.interactive import Click, iou, iter_propagate, next_click, prepare, refine
from llm4seg.models import load_model
from llm4seg.preprocess import WINDOWS

from .click_sets import cases
from .fewshot_tasks import pick_slices


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def correct(image, model, target, *, z=None, window=None, start=None, max_clicks=20, stop_at=0.85):
    """One simulated correction: the mask and the number of clicks it took."""
    inp = prepare(image, model, z=z, window=window)
    mask = refine(image, model, [], prepared=inp, z=z) if start is None else start
    clicks: list[Click] = []
    while len(clicks) < max_clicks and iou(mask, target) < stop_at:
        c = next_click(mask, target)
        if c is None:
            break
        clicks.append(Click(c.y, c.x, c.positive, z))
        mask = refine(image, model, clicks, previous=mask, prepared=inp, z=z)
    return mask, len(clicks)


def ct_session(click_model: str, n_slices: int, max_clicks: int) -> dict:
    from llm4seg.io import read_image

    from .click_sets import DATA, liver_reference

    ct = read_image(DATA / "ircad17" / "ct.nii.gz").array
    truth = liver_reference(read_image(DATA / "ircad17" / "labels.nii.gz").array)
    start, clicker = load_model("ct-liver", device="cpu"), load_model(click_model, device="cpu")
    window = WINDOWS["abdomen"]
    t0 = time.perf_counter()
    auto = segment(ct, start, tta=None).labels
    out: dict = {"auto": {"dice": dice(auto, truth), "seconds": time.perf_counter() - t0}}
    zs = pick_slices(truth, n_slices, 0)
    corrected, clicks = auto.copy(), 0
    t1 = time.perf_counter()
    for z in zs:
        corrected[z], used = correct(ct, clicker, truth[z], z=z, window=window, start=auto[z], max_clicks=max_clicks,
                                     stop_at=0.95)
        clicks += used
    t_clicks = time.perf_counter() - t1
    out["clicked"] = {"dice": dice(corrected, truth), "clicks": clicks, "slices": zs, "seconds": t_clicks}
    t2 = time.perf_counter()
    propagated = corrected.copy()
    for z in zs:
        filled = run_to_end(iter_propagate(ct, clicker, z, corrected[z], window=window, protected=set(zs)))
        for zz, m in (filled or {}).items():
            propagated[zz] = m
    out["propagated"] = {"dice": dice(propagated, truth), "seconds": t_clicks + time.perf_counter() - t2}
    t3 = time.perf_counter()
    sparse = np.zeros_like(corrected)
    sparse[zs] = corrected[zs]
    plan = summarise([TrainingPair(ct, sparse, name="ircad17", slices=zs)], start.card.classes)
    outcome = run_to_end(finetune(start, plan, preset_config("quick", seed=0)))
    tuned = segment(ct, outcome.model, tta=None).labels
    tuned[zs] = corrected[zs]
    out["finetuned"] = {"dice": dice(tuned, truth), "kept_start": bool(outcome.kept_start),
                        "seconds": out["auto"]["seconds"] + t_clicks + time.perf_counter() - t3}
    return out


def loop(set_name: str, click_model: str, n: int, every: int, tune: bool) -> dict:
    model = load_model(click_model, device="cpu")
    items = list(cases(set_name, n))
    clicks, pairs = [], []
    for i, case in enumerate(items):
        if tune and i and i % every == 0:
            plan = summarise(pairs, model.card.classes)
            model = run_to_end(finetune(model, plan, preset_config("quick", seed=0))).model
        mask, used = correct(case.image, model, case.target, window=case.window)
        clicks.append(used)
        pairs.append(TrainingPair(case.image, mask, name=case.name, rgb=case.image.ndim == 3))
    blocks = [float(np.mean(clicks[a:a + every])) for a in range(0, len(clicks), every)]
    return {"clicks": clicks, "blocks": blocks}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.click_sessions", description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["ct", "loop"])
    p.add_argument("--click-model", default="generalist-clicks")
    p.add_argument("--slices", type=int, default=3)
    p.add_argument("--clicks", type=int, default=5, help="ct: at most this many clicks per slice")
    p.add_argument("--sets", nargs="+", default=["colondb", "tg3k"])
    p.add_argument("--n", type=int, default=30)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.what == "ct":
        result = ct_session(args.click_model, args.slices, args.clicks)
    else:
        result = {s: {"tuned": loop(s, args.click_model, args.n, args.every, True),
                      "fixed": loop(s, args.click_model, args.n, args.every, False)} for s in args.sets}
    print(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
