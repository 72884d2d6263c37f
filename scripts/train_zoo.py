"""Train the model zoo's checkpoints with the CPU recipe (AdamW, warm-up, cosine decay, flips + rot90).

The generalist (default ``--parts``): BUSI + ISIC 2018 + CVC-ClinicDB + TG3K + ircad17 liver (z 0-71),
balanced per dataset, one foreground class, 3 channels (gray images replicated; CT slices in the abdomen
window). A specialist: one part, e.g. ``--parts cvc_clinicdb --init runs/generalist.safetensors``, or
``--parts busi --channels 1`` from scratch. CVC-ColonDB, the hippocampus MRI and ircad17's other structures
are never offered (they are the unseen tasks of the few-shot benchmark), and TG3K's test_* frames and
ircad17 z 72-118 stay out (held-out tests). Each part keeps the same seeded validation split whatever the
mixture, so a specialist started from the generalist is validated on items neither of them trained on.

    python scripts/train_zoo.py --out runs/generalist.safetensors [--steps 4000] [--resume]
    python scripts/train_zoo.py --parts busi --channels 1 --out runs/busi-lesion.safetensors --steps 6000

Resumable: with --resume the run continues from the checkpoint and its training state.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from llm4seg.events import CancelToken, Failed, Log, Metric, Progress, run_to_end
from llm4seg.preprocess import WINDOWS, Preprocessing
from llm4seg.train.config import TrainConfig
from llm4seg.train.loop import fit
from llm4seg.train.mixture import Part, load_mixture


def all_parts(data: Path) -> dict[str, Part]:
    """Every dataset the zoo trains on, by label."""
    parts = [
        Part("busi", data / "busi"),
        Part("isic", data / "isic"),
        Part("cvc_clinicdb", data / "cvc_clinicdb"),
        Part("tg3k", data / "tg3k", name_filter=lambda n: not n.startswith("test_")),
        Part("ircad17_liver", data / "ircad17", classes=["liver=1+2"], window=WINDOWS["abdomen"], z_range=(0, 72)),
    ]
    return {p.label: p for p in parts}


def parts(data: Path, labels: list[str] | None = None) -> list[Part]:
    known = all_parts(data)
    unknown = sorted(set(labels or []) - set(known))
    if unknown:
        raise SystemExit(f"unknown part(s) {unknown}: choose from {sorted(known)}")
    return [known[label] for label in (labels or known)]


def write_val_lists(source_names: list[str], chosen: list[Part], out: Path) -> None:
    """``<out>.val.<part>.txt``: the validation item names of each 2D part, for ``llm4seg evaluate --list``
    (volumes are split by slice: no file)."""
    for part in chosen:
        items = [n.split("/", 1)[1] for n in source_names if n.startswith(part.label + "/")]
        names = sorted(set(items))
        if names and len(names) == len(items):  # one item per source: 2D images (a volume's slices repeat it)
            out.parent.mkdir(parents=True, exist_ok=True)
            Path(f"{out.with_suffix('')}.val.{part.label}.txt").write_text("\n".join(names) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data", type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--parts", nargs="+", default=None, help="datasets to train on (default: all, the generalist)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=3, help="input channels of a new model")
    p.add_argument("--init", type=Path, default=None, help="start from this checkpoint's weights")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--per-dataset", type=int, default=None,
                   help="slices per dataset per epoch (default: the largest dataset's training count)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--jitter", type=float, default=0.0,
                   help="rotation/zoom/shift and appearance jitter after flips + rot90 (1: its default range; 0: off)")
    p.add_argument("--prompts", choices=["clicks"], default=None,
                   help="train a click-conditioned model with simulated clicks (llm4seg.train.prompts)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--no-llm", action="store_true")
    p.add_argument("--val-lists-only", action="store_true",
                   help="only write the validation names of each 2D part (<out>.val.<part>.txt) and stop")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from llm4seg.checkpoint import load_checkpoint
    from llm4seg.model import ModelConfig, build_model
    from llm4seg.train.state import load_state, state_path_for

    chosen = parts(args.data, args.parts)
    prep = Preprocessing(size=args.size, channels=args.channels)
    t0 = time.perf_counter()
    train, val = load_mixture(chosen, prep, per_dataset=args.per_dataset, seed=args.seed)
    print(f"loaded {len(train)} training and {len(val)} validation slices in {time.perf_counter() - t0:.0f} s", flush=True)
    write_val_lists([val.source_names[g] for g in val.groups], chosen, args.out)
    if args.val_lists_only:
        return 0
    state = None
    if args.resume:
        state = load_state(state_path_for(args.out))
        model = load_checkpoint(args.out, device="cpu")
    elif args.init is not None:
        model = load_checkpoint(args.init, device="cpu")
        if model.config.in_channels != args.channels:
            raise SystemExit(f"--init {args.init} has {model.config.in_channels} input channel(s); "
                             f"pass --channels {model.config.in_channels}")
    else:
        from llm4seg.llm import DEFAULT_LLM

        model = build_model(ModelConfig(in_channels=args.channels, num_classes=1, llm=None if args.no_llm else DEFAULT_LLM),
                            seed=args.seed)
    config = TrainConfig(preset="zoo", steps=args.steps, batch_size=args.batch_size, optimizer="adamw",
                         lr=args.lr, weight_decay=1e-4, schedule="cosine", warmup_steps=args.warmup, augment=True,
                         jitter=args.jitter, seed=args.seed, device="cpu", num_threads=args.threads,
                         val_every=args.val_every, prompts=args.prompts,
                         select="last" if args.prompts else "best")
    provenance = {"data": " + ".join(p.label for p in chosen), "per_dataset": args.per_dataset,
                  "classes": ["foreground"], "init": str(args.init) if args.init else None,
                  "prompts": args.prompts}
    def show(event) -> None:
        if isinstance(event, Log):
            print(event.text, flush=True)
        elif isinstance(event, Metric) and event.name.startswith("val"):
            print(f"step {event.step}: {event.name} {event.value:.4f}", flush=True)
        elif isinstance(event, Progress) and event.done % 50 == 0:
            print(f"{event.done}/{event.total} {event.message} ({time.perf_counter() - t0:.0f} s)", flush=True)
        elif isinstance(event, Failed):
            print("FAILED:", event.reason, flush=True)

    result = run_to_end(fit(model, train, val, config, CancelToken(), out=args.out, resume=state,
                            provenance=provenance), show)
    if result.status == "failed":
        return 1
    if result is not None:
        print(json.dumps({"status": result.status, "steps": result.steps, "best_step": result.best_step,
                          "seconds": round(result.seconds, 1), **{k: v for k, v in result.metrics.items()
                                                                  if isinstance(v, (int, float))}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
