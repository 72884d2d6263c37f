"""``llm4seg train`` and ``llm4seg evaluate``: argument parsing and rendering; the work is in ``llm4seg.train``."""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any

from ..infer import TTA_OPTIONS, tta_option
from .config import PRESETS

__all__ = ["register", "cmd_train", "cmd_evaluate"]


class UsageError(ValueError):
    """Bad command-line input (printed as one line by the CLI)."""


def register(subparsers: Any) -> None:
    """Add the ``train`` and ``evaluate`` subcommands to the ``llm4seg`` parser."""
    p = subparsers.add_parser("train", help="train or fine-tune a model on labelled images or volumes")
    p.add_argument("data", help="data folder: images/ + masks/ (or masks/0/, masks/1/ per class), images/ + "
                   "labels/ (label images or NIfTI), or NIfTI pairs")
    p.add_argument("--out", "-o", help="checkpoint to write (.safetensors); the training state goes next to it")
    llm = p.add_mutually_exclusive_group()
    llm.add_argument("--llm", default=None, help="frozen LLM layer descriptor (default smollm2-135m:15)")
    llm.add_argument("--no-llm", action="store_true", help="plain CMUNeXt baseline without the LLM layer")
    llm.add_argument("--random-llm", action="store_true", help="a randomly initialised layer of the same shape")
    llm.add_argument("--adapters-only", action="store_true",
                     help="the booster's two Linear adapters at the LLM's width with no layer between (ablation)")
    p.add_argument("--faithful", action="store_true",
                   help="a new model in the reference code's architecture: bilinear upsampling, sin/cos positions, "
                        "causal attention, no calibration of the output projection")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--init", metavar="CKPT", help="start from this checkpoint's weights (fine-tuning)")
    start.add_argument("--resume", metavar="CKPT", help="continue an interrupted run from its checkpoint and state")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int)
    length.add_argument("--steps", type=int)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="paper: the full recipe (default for new models); quick: fast decoder fine-tuning (default "
                        "with --init); thorough: whole-network fine-tuning")
    p.add_argument("--size", type=int, default=None, help="training size in pixels (default 256, or the checkpoint's)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate (default: the preset's)")
    p.add_argument("--channels", type=int, choices=[1, 3], default=1, help="input channels of a new model")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--val-split", type=float, default=0.2, help="validation fraction (default 0.2)")
    split.add_argument("--val-list", metavar="FILE", help="names (one per line) of the validation items")
    p.add_argument("--list", metavar="FILE", help="names of the items to use (default: a *_train.txt in DATA)")
    p.add_argument("--classes", nargs="+", help="classes to train: names, label values, or NAME=V1+V2")
    p.add_argument("--window", help="CT window: a preset (abdomen, liver, ...) or LEVEL,WIDTH")
    p.add_argument("--only-labelled", action="store_true", help="volumes: use only slices with labels")
    p.add_argument("--z-range", metavar="START,STOP", help="volumes: use only these slices")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="flips/rot90 (default: on for the paper preset, off for quick)")
    p.add_argument("--jitter", type=float, default=None, metavar="STRENGTH",
                   help="also rotate/zoom/shift and vary gamma, contrast, colour and noise (1: the default range)")
    p.add_argument("--prompts", choices=["clicks"], default=None,
                   help="train a click-conditioned model with simulated clicks (adds zero-weight prompt channels "
                        "to an --init model; trains the whole network)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=int, default=None, help="seed of the split, initialisation and batches (default 0, "
                   "or the resumed run's)")
    p.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out checkpoint")
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("evaluate", help="score a checkpoint on labelled data")
    p.add_argument("data", help="data folder (same layouts as train)")
    p.add_argument("--checkpoint", "-c", required=True, help="a .safetensors file or a shipped model name")
    p.add_argument("--list", metavar="FILE", help="names (one per line) of the items to evaluate")
    p.add_argument("--classes", nargs="+", help="dataset classes matching the model's (default: by the card's names)")
    p.add_argument("--window", help="CT window override: a preset or LEVEL,WIDTH")
    p.add_argument("--only-labelled", action="store_true", help="volumes: score only slices with labels")
    p.add_argument("--z-range", metavar="START,STOP")
    p.add_argument("--no-hd95", action="store_true", help="skip HD95 (faster)")
    p.add_argument("--tta", choices=TTA_OPTIONS, default="off",
                   help="test-time augmentation as in segment (default off: the numbers of the model cards)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object with the metrics")
    p.set_defaults(func=cmd_evaluate)


def _window(text: str | None) -> tuple[float, float] | None:
    if not text:
        return None
    from ..preprocess import WINDOWS

    if text.lower() in WINDOWS:
        return WINDOWS[text.lower()]
    try:
        level, width = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--window {text!r}: give a preset ({', '.join(WINDOWS)}) or LEVEL,WIDTH like 40,400") from None
    return level, width


def _range(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        a, b = (int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--z-range {text!r}: give START,STOP like 40,80") from None
    if b <= a:
        raise UsageError(f"--z-range {text!r}: STOP must be greater than START")
    return a, b


def _read_names(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"list file {p} not found")
    return [line.strip() for line in p.read_text().splitlines() if line.strip() and not line.startswith("#")]


def _jsonable(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def _sources(args: argparse.Namespace, card_classes: list[str] | None) -> tuple[list, list[str]]:
    """The data's sources and class names. Without --classes, a checkpoint's class names pick the dataset's
    classes when the dataset knows them; otherwise the dataset's own classes are used, named as in the
    checkpoint when their number matches."""
    from .sources import find_sources

    kw = dict(list_file=args.list, only_labelled=args.only_labelled, z_range=_range(args.z_range))
    if args.classes or not card_classes:
        return find_sources(args.data, classes=args.classes, **kw)
    try:
        return find_sources(args.data, classes=card_classes[1:], **kw)
    except ValueError:
        sources, names = find_sources(args.data, **kw)
        return sources, (list(card_classes) if len(names) == len(card_classes) else names)


def _new_model(args: argparse.Namespace, num_classes: int) -> Any:
    from ..model import ModelConfig, build_model

    if args.no_llm:
        llm, init = None, "pretrained"
    else:
        from ..llm import DEFAULT_LLM

        llm = args.llm or DEFAULT_LLM
        init = "random" if args.random_llm else "none" if args.adapters_only else "pretrained"
    kind = ModelConfig.faithful if args.faithful else ModelConfig
    return build_model(kind(in_channels=args.channels, num_classes=num_classes, llm=llm, llm_init=init), seed=args.seed)


def cmd_train(args: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint
    from ..events import CancelToken, Failed, Log, Metric, Progress, run_to_end
    from ..preprocess import Preprocessing
    from .config import TrainConfig
    from .data import build_slices, split
    from .loop import fit
    from .state import load_state, state_path_for

    if args.resume and (args.llm or args.no_llm or args.random_llm or args.adapters_only):
        raise UsageError("--resume continues a run with its own model: drop --llm/--no-llm/--random-llm")
    out = Path(args.out) if args.out else (Path(args.resume) if args.resume else None)
    if out is None:
        raise UsageError("--out CKPT is required (where to write the trained checkpoint)")
    if out.suffix != ".safetensors":
        raise UsageError(f"--out {out}: checkpoints are .safetensors files")
    if out.exists() and not args.overwrite and not (args.resume and Path(args.resume).resolve() == out.resolve()):
        raise UsageError(f"{out} exists: pass --overwrite to replace it, or choose another --out")
    rank = int(os.environ.get("RANK", "0"))
    verbose = rank == 0

    model, state, base = None, None, None
    if args.resume:
        state = load_state(state_path_for(args.resume))
    args.seed = args.seed if args.seed is not None else int(state.config.get("seed", 0)) if state else 0
    if args.resume:
        model = load_checkpoint(args.resume, device="cpu")
    elif args.init:
        from ..models import load_model

        model = load_model(args.init, device="cpu")
        base = args.init
    if model is not None and model.card is not None:
        prep = model.card.preprocess
        if args.size and args.size != prep.size:
            raise UsageError(f"--size {args.size} differs from the checkpoint's {prep.size}: fine-tuning keeps the "
                             "checkpoint's preprocessing")
        if args.window:
            prep.window = _window(args.window)
    else:
        prep = Preprocessing(size=args.size or 256, channels=args.channels, window=_window(args.window))
    cancel = CancelToken()
    card_classes = model.card.classes if model is not None and model.card is not None else None
    sources, class_names = _sources(args, card_classes)
    data = build_slices(sources, prep, class_names, cancel=cancel)
    if args.val_list:
        train_set, val_set = split(data, val_names=_read_names(args.val_list))
    else:
        train_set, val_set = split(data, args.val_split, seed=args.seed)
    if model is None:
        model = _new_model(args, data.model_classes)

    overrides: dict[str, Any] = {"seed": args.seed, "device": args.device}
    for key in ("steps", "epochs", "batch_size", "lr", "jitter"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.epochs is not None:
        overrides["steps"] = None  # epochs asked for: the preset's step count does not apply
    if args.threads:
        overrides["num_threads"] = args.threads
    if args.augment is not None:
        overrides["augment"] = args.augment
    if args.prompts:
        overrides.update(prompts=args.prompts, train="all", cache_features=False)
    if state is not None:
        saved = dict(state.config)
        if "steps" in overrides or "epochs" in overrides:
            saved.pop("steps", None), saved.pop("epochs", None)
        config = TrainConfig.from_dict({**saved, **overrides})
    else:
        preset = args.preset or ("quick" if args.init else "paper")
        config = TrainConfig.from_preset(preset, **overrides)
    provenance = {"data": str(args.data), "base_checkpoint": base, "classes": data.class_names[1:]}

    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: Any) -> None:  # first Ctrl-C: stop after this step and save
        if cancel.cancelled:
            raise KeyboardInterrupt
        cancel.cancel()
        if verbose:
            print("\nstopping after this step (Ctrl-C again to abort)", file=sys.stderr)

    signal.signal(signal.SIGINT, on_sigint)
    from tqdm import tqdm

    bar = tqdm(total=1, desc="train", unit="step", disable=not verbose or args.json or not sys.stderr.isatty(),
               file=sys.stderr, dynamic_ncols=True)
    failure = None

    def show(event: Any) -> None:
        nonlocal failure
        if isinstance(event, Failed):
            failure = event.reason
        elif not verbose:
            return
        elif isinstance(event, Progress):
            bar.total, bar.n = event.total, event.done
            bar.set_description(event.message.split(" loss")[0] if event.message else "train", refresh=False)
            bar.refresh()
        elif isinstance(event, Metric) and event.name == "loss":
            bar.set_postfix(loss=f"{event.value:.4f}", refresh=False)
        elif isinstance(event, Log) and not args.json:
            bar.write(event.text, file=sys.stdout)

    try:
        result = run_to_end(fit(model, train_set, val_set, config, cancel, out=out, resume=state,
                                provenance=provenance), show)
    finally:
        bar.close()
        signal.signal(signal.SIGINT, previous)
    if failure:
        raise RuntimeError(failure)
    if verbose and result is not None:
        summary = {"status": result.status, "checkpoint": str(result.checkpoint) if result.checkpoint else None,
                   "state_file": str(result.state_file) if result.state_file else None, "steps": result.steps,
                   "best_step": result.best_step, "seconds": round(result.seconds, 1), **result.metrics}
        if args.json:
            print(json.dumps(_jsonable({**summary, "history": result.history})))
        else:
            best = f", best val IoU {result.metrics['val_iou']:.4f} at step {result.best_step}" if result.metrics else ""
            print(f"{result.status}: {result.steps} steps in {result.seconds:.1f} s{best}; wrote {result.checkpoint}")
    return 0 if result is None or result.status == "done" else 1


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..events import Progress, run_to_end
    from ..models import load_model
    from .evaluation import iter_evaluate

    model = load_model(args.checkpoint, device=args.device)
    sources, class_names = _sources(args, model.card.classes if model.card is not None else None)
    from tqdm import tqdm

    with tqdm(total=len(sources), desc="evaluate", unit="item", disable=args.json or not sys.stderr.isatty(),
              file=sys.stderr, leave=False) as bar:
        def show(event: Any) -> None:
            if isinstance(event, Progress):
                bar.n = event.done
                bar.refresh()

        metrics = run_to_end(iter_evaluate(model, sources, class_names, hd=not args.no_hd95,
                                           window=_window(args.window),
                                           tta=tta_option(args.tta)), show)
    assert metrics is not None
    metrics = {**metrics, "checkpoint": str(args.checkpoint), "data": str(args.data), "classes": class_names[1:]}
    if args.json:
        print(json.dumps(_jsonable(metrics)))
        return 0
    keys = ["iou", "dice", "sensitivity", "precision", "specificity", "accuracy"] + ([] if args.no_hd95 else ["hd95"])
    print(f"{metrics['n']} slices, {', '.join(class_names[1:])} (per image mean | pooled pixels)")
    for key in keys:
        pooled = metrics.get(key + "_pooled")
        print(f"  {key:<12} {metrics[key]:.4f} | {pooled:.4f}" if pooled is not None else f"  {key:<12} {metrics[key]:.4f}")
    return 0
