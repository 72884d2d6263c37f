"""Train the 3-channel generalist: BUSI + ISIC 2018 + CVC-ClinicDB + TG3K + ircad17 liver (z 0-71),
balanced per dataset, one foreground class. Gray images are replicated to 3 channels; CT slices use the
abdomen window. CVC-ColonDB, the hippocampus MRI and ircad17's other structures stay out (they are the
unseen tasks of the few-shot benchmark), and so do TG3K's test_* frames and ircad17 z 72-118 (held out).

    python scripts/train_generalist.py --out runs/generalist.safetensors [--steps 4000] [--resume]

Resumable: with --resume the run continues from the checkpoint and its training state.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from llm4seg.events import CancelToken, Done, Cancelled, Failed, Log, Metric, Progress
from llm4seg.preprocess import WINDOWS, Preprocessing
from llm4seg.train.config import TrainConfig
from llm4seg.train.loop import fit
from llm4seg.train.mixture import Part, load_mixture


def parts(data: Path) -> list[Part]:
    return [
        Part("busi", data / "busi"),
        Part("isic", data / "isic"),
        Part("cvc_clinicdb", data / "cvc_clinicdb"),
        Part("tg3k", data / "tg3k", name_filter=lambda n: not n.startswith("test_")),
        Part("ircad17_liver", data / "ircad17", classes=["liver=1+2"], window=WINDOWS["abdomen"], z_range=(0, 72)),
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data", type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--per-dataset", type=int, default=None,
                   help="slices per dataset per epoch (default: the largest dataset's training count)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--no-llm", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from llm4seg.checkpoint import load_checkpoint
    from llm4seg.model import ModelConfig, build_model
    from llm4seg.train.state import load_state, state_path_for

    prep = Preprocessing(size=args.size, channels=3)
    t0 = time.perf_counter()
    train, val = load_mixture(parts(args.data), prep, per_dataset=args.per_dataset, seed=args.seed)
    print(f"loaded {len(train)} training and {len(val)} validation slices in {time.perf_counter() - t0:.0f} s", flush=True)
    state = None
    if args.resume:
        state = load_state(state_path_for(args.out))
        model = load_checkpoint(args.out, device="cpu")
    else:
        from llm4seg.llm import DEFAULT_LLM

        model = build_model(ModelConfig(in_channels=3, num_classes=1, llm=None if args.no_llm else DEFAULT_LLM),
                            seed=args.seed)
    config = TrainConfig(preset="generalist", steps=args.steps, batch_size=args.batch_size, optimizer="adamw",
                         lr=args.lr, weight_decay=1e-4, schedule="cosine", warmup_steps=args.warmup, augment=True,
                         seed=args.seed, device="cpu", num_threads=args.threads, val_every=args.val_every)
    provenance = {"data": "busi + isic + cvc_clinicdb + tg3k (train_*, val_*) + ircad17 liver z 0-71",
                  "per_dataset": args.per_dataset, "classes": ["foreground"]}
    result = None
    for event in fit(model, train, val, config, CancelToken(), out=args.out, resume=state, provenance=provenance):
        if isinstance(event, Log):
            print(event.text, flush=True)
        elif isinstance(event, Metric) and event.name.startswith("val"):
            print(f"step {event.step}: {event.name} {event.value:.4f}", flush=True)
        elif isinstance(event, Progress) and event.done % 50 == 0:
            print(f"{event.done}/{event.total} {event.message} ({time.perf_counter() - t0:.0f} s)", flush=True)
        elif isinstance(event, (Done, Cancelled)):
            result = event.result
        elif isinstance(event, Failed):
            print("FAILED:", event.reason, flush=True)
            return 1
    if result is not None:
        print(json.dumps({"status": result.status, "steps": result.steps, "best_step": result.best_step,
                          "seconds": round(result.seconds, 1), **{k: v for k, v in result.metrics.items()
                                                                  if isinstance(v, (int, float))}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
