"""The ``llm4seg`` command line: argument parsing and rendering only; the work is in the core modules."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

EXIT_ERROR = 2


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code non-zero."""


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="slice", disable=not enabled, leave=False, file=sys.stderr)


def cmd_info(args: argparse.Namespace) -> int:
    from .cardtext import card_text
    from .checkpoint import read_card
    from .models import UNTRAINED_NOTE, resolve, untrained_default

    path = resolve(args.checkpoint)
    card = untrained_default().card if path is None else read_card(path)
    if args.json:
        from dataclasses import asdict

        d = asdict(card)
        d["path"] = str(path) if path else None
        d["untrained"] = path is None
        print(json.dumps(d, indent=2))
    else:
        print(f"checkpoint  {path if path else 'default (built in memory)'}")
        print(card_text(card))
        if path is None:
            print(f"note        {UNTRAINED_NOTE}")
    return 0


def _output_path(src: Path, out_dir: Path, fmt: str, ndim_spatial: int) -> Path:
    from .io import NIFTI_EXTS, RASTER_EXTS, TIFF_EXTS

    name = src.name
    for ext in (*NIFTI_EXTS, *RASTER_EXTS, *TIFF_EXTS, ".dcm"):
        if name.lower().endswith(ext):
            name, src_ext = name[: -len(ext)], ext
            break
    else:
        src_ext = ""  # DICOM folder
    if fmt == "auto":
        if src_ext in (*NIFTI_EXTS, ".dcm", "") or ndim_spatial == 3:
            fmt = "nii.gz"
        else:
            fmt = "tif" if src_ext in TIFF_EXTS else "png"
    if fmt == "png" and ndim_spatial == 3:
        raise CLIError(f"{src}: a volume cannot be written as PNG; use --format nii.gz or tif")
    return out_dir / f"{name}_labels.{fmt}"


def _writable_folder(folder: Path) -> Path:
    """Create ``folder`` if needed and prove it takes a file, before minutes are spent segmenting."""
    if folder.exists() and not folder.is_dir():
        raise CLIError(f"--out {folder} is a file, not a folder: give a folder for the label files")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".llm4seg-write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise CLIError(f"cannot write into the output folder {folder} ({err.strerror or err}): "
                       "choose a folder you can write to with --out") from err
    return folder


def _click_options(args: argparse.Namespace) -> tuple[list, Any]:
    """The clicks of ``--clicks`` and the model that takes them (``--click-model``; auto: the shipped click
    model matching ``--checkpoint``, else the checkpoint itself through the training-free fallback)."""
    if not args.clicks:
        return [], None
    from .interactive.clickfile import read_clicks
    from .models import click_model_for, load_model

    if len(args.inputs) != 1:
        raise CLIError("--clicks holds the clicks of one image: give exactly one input")
    try:
        clicks = read_clicks(args.clicks)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    name = click_model_for(args.checkpoint) if args.click_model == "auto" else args.click_model
    return clicks, (load_model(name, device="cpu") if name else None)


def cmd_segment(args: argparse.Namespace) -> int:
    from .events import Log, Progress, run_to_end
    from .infer import image_layout, tta_option
    from .io import read_image, write_labels
    from .jobs import segment_job
    from .models import load_model
    from .postprocess import PostprocessOptions
    from .preprocess import WINDOWS

    cleanup = PostprocessOptions(largest=args.largest, fill_holes=args.fill_holes, min_size=args.min_size,
                                 mode="slice" if args.per_slice else "3d")
    model = load_model(args.checkpoint, device="cpu")  # the job moves it to --device, or falls back to the CPU
    window = None
    if args.window:
        window = WINDOWS.get(args.window) or tuple(float(v) for v in args.window.split(","))
    clicks, click_model = _click_options(args)
    out_dir = _writable_folder(Path(args.out))
    reports = []
    for item in args.inputs:
        src = Path(item)
        data = read_image(src)
        spatial = 3 if image_layout(data.array).startswith("3d") else 2
        dest = _output_path(src, out_dir, args.format, spatial)
        if dest.exists() and not args.overwrite:
            raise CLIError(f"{dest} exists: pass --overwrite to replace it, or choose another --out")
        job = segment_job(data.array, model, device=args.device, options=cleanup, window=window,
                          batch_size=args.batch_size, tta=tta_option(args.tta))
        with _progress_bar(1, src.name, not args.json and sys.stderr.isatty()) as bar:
            def show(event: object) -> None:
                if isinstance(event, Progress):
                    bar.total, bar.n = event.total, event.done
                    bar.refresh()
                elif isinstance(event, Log) and event.level == "warning":
                    print(f"llm4seg: warning: {event.text}", file=sys.stderr)

            outcome = run_to_end(job, show)
        result, labels = outcome.result, outcome.labels
        if clicks:
            from .interactive.clickfile import apply_clicks

            labels = apply_clicks(data.array, labels, click_model or model, clicks, window=window)
        written = write_labels(dest, labels, like=data, overwrite=args.overwrite, classes=result.classes)
        counts = {name: int((labels == i).sum()) for i, name in enumerate(result.classes) if i > 0}
        report = {
            "input": str(src), "output": str(written), "shape": list(labels.shape),
            "classes": result.classes, "voxels": counts, "seconds": round(result.seconds, 3),
            "device": outcome.device, "checkpoint": model.card.name if model.card else None,
            "notes": outcome.notes + result.notes, "postprocessing": cleanup.describe(), "tta": result.tta,
        }
        for note in result.notes:
            print(f"llm4seg: note: {src.name}: {note}", file=sys.stderr)
        reports.append(report)
        if not args.json:
            fg = ", ".join(f"{k}: {v}" for k, v in counts.items())
            print(f"{src} -> {written} ({fg}; {result.seconds:.2f} s on {outcome.device})")
    if args.json:
        print(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .checkpoint import read_card
    from .models import list_models, modality

    rows = []
    for e in list_models():
        card = read_card(e.path) if e.path.is_file() else None
        rows.append({"name": e.name, "file": str(e.path), "task": e.task, "default": e.default,
                     "modality": modality(card) if card else None, "classes": card.classes[1:] if card else [],
                     "size": card.preprocess.size if card else None, "metrics": card.metrics if card else {}})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no trained checkpoints are installed; 'default' is an untrained model (see `llm4seg info default`)")
    for r in rows:
        metrics = ", ".join(f"{k}={v:.3f}" for k, v in r["metrics"].items()
                            if isinstance(v, float) and k.endswith(("_dice", "_iou")) and "pooled" not in k)
        print(f"{r['name']}{' (default)' if r['default'] else ''}: {r['task']}; input {r['modality']} at "
              f"{r['size']}²; classes {', '.join(r['classes'])}; {metrics}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert_state_dict

    out = convert_state_dict(args.input, args.out, llm=args.llm, in_channels=args.in_channels,
                             num_classes=args.num_classes, prefix_map=args.map, faithful=args.faithful)
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .infer import TTA_OPTIONS

    parser = argparse.ArgumentParser(prog="llm4seg", description="LLM4Seg medical image segmentation")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="show a checkpoint's model card")
    p.add_argument("checkpoint", help="a .safetensors file, a shipped model name, or 'default'")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("segment", help="segment images or volumes")
    p.add_argument("inputs", nargs="+", help="PNG/JPEG/BMP/TIFF/NIfTI files or DICOM folders")
    p.add_argument("--checkpoint", "-c", default="default", help="a .safetensors file, a model name, or 'default'")
    p.add_argument("--out", "-o", required=True, help="output folder")
    p.add_argument("--format", choices=["auto", "png", "tif", "nii.gz"], default="auto")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--window", help="CT window: a preset (abdomen, liver, lung, bone, ...) or LEVEL,WIDTH")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--tta", choices=TTA_OPTIONS, default="auto",
                   help="test-time augmentation: average over flips (3 passes) or the 8 square symmetries; auto "
                        "(default): flips when the model trained with flips + rot90 (the shipped models), else off")
    p.add_argument("--largest", action="store_true", help="keep only the largest connected component of each class")
    p.add_argument("--fill-holes", action="store_true", help="fill holes inside each class")
    p.add_argument("--min-size", type=int, default=0, metavar="N",
                   help="remove objects smaller than N pixels (voxels in 3D)")
    p.add_argument("--per-slice", action="store_true",
                   help="volumes: post-process each slice on its own instead of the whole volume in 3D")
    p.add_argument("--clicks", metavar="FILE",
                   help="correct the mask with clicks: a JSON list of {\"y\", \"x\", \"positive\"[, \"z\"]} or a "
                        "napari Points CSV, in the image's pixel coordinates, oldest first (one input)")
    p.add_argument("--click-model", default="auto",
                   help="the model that takes the clicks: auto (the shipped click model for --checkpoint, else "
                        "--checkpoint itself, training-free), a model name or a .safetensors")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("models", help="list the shipped checkpoints")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("convert", help="convert a trusted plain PyTorch state dict to a safetensors checkpoint")
    p.add_argument("input")
    p.add_argument("--out", required=True)
    p.add_argument("--llm", default="smollm2-135m:15", help="LLM descriptor, or 'none' for the baseline")
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=1)
    p.add_argument("--map", action="append", default=[], metavar="OLD=NEW", help="rename a key prefix")
    p.add_argument("--faithful", action="store_true",
                   help="the reference code's architecture (bilinear upsampling, sin/cos positions, causal): for "
                        "weights trained with the paper's code")
    p.set_defaults(func=cmd_convert)

    try:
        from .train.commands import register
    except ImportError:
        pass
    else:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("llm4seg: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for the user; --debug for the traceback
        if args.debug:
            raise
        print(f"llm4seg: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


def _one_line(exc: Exception) -> Any:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
