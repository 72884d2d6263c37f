"""The few-shot tasks of ``benchmarks.fewshot``: which items a user labels and which are scored.

2D tasks hold a *label pool* (the k labelled images are drawn from it, one draw per seed) and a fixed,
disjoint *eval set*. 3D tasks hold volumes; k slices are spread evenly over the structure's extent
(seed 0) or with a seeded jitter (other seeds), and Dice/IoU are pooled over all the other slices.

Unseen tasks (never in any shipped model's training data): ``colondb``, ``hippocampus``, ``portal_vein``,
``bone``. CVC-ColonDB is split by video sequence (label pool and eval set share no sequence), so near-identical
frames of one polyp never sit on both sides.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from llm4seg.preprocess import WINDOWS

from .ct_fewshot import liver_reference

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# CVC-ColonDB frames per video sequence (first, last), from the database's description
COLONDB_SEQUENCES = [(1, 38), (39, 60), (61, 76), (77, 97), (98, 148), (149, 155), (156, 203), (204, 208),
                     (209, 263), (264, 273), (274, 300), (301, 320), (321, 340), (341, 360), (361, 379)]


@dataclass
class Task:
    """One few-shot task. 2D: ``pool``/``eval`` are item names, ``load(name) -> (image, mask)``.
    3D: ``volumes() -> [(name, image, mask, window)]`` with a binary mask (Z, Y, X)."""

    name: str
    kind: str
    unseen: bool
    modality: str
    rgb: bool = False
    pool: list[str] = field(default_factory=list)
    eval: list[str] = field(default_factory=list)
    load: Callable[[str], tuple[np.ndarray, np.ndarray]] | None = None
    volumes: Callable[[], list[tuple[str, np.ndarray, np.ndarray, tuple[float, float] | None]]] | None = None


def _folder_loader(root: Path, rgb: bool) -> Callable[[str], tuple[np.ndarray, np.ndarray]]:
    images = {p.stem: p for p in (root / "images").iterdir()}

    def load(name: str) -> tuple[np.ndarray, np.ndarray]:
        with Image.open(images[name]) as im:
            image = np.asarray(im.convert("RGB" if rgb else "L"))
        with Image.open(root / "masks" / "0" / f"{name}.png") as m:
            mask = (np.asarray(m.convert("L")) > 127).astype(np.uint8)
        return image, mask

    return load


def _names(root: Path, list_name: str = "list.txt") -> list[str]:
    return [n.strip() for n in (root / list_name).read_text().splitlines() if n.strip()]


def _random_split(names: list[str], n_eval: int, seed: int = 1234) -> tuple[list[str], list[str]]:
    order = np.random.default_rng(seed).permutation(len(names))
    ev = sorted(names[i] for i in order[:n_eval])
    return sorted(names[i] for i in order[n_eval:]), ev


def _task_2d(name: str, folder: str, *, rgb: bool, unseen: bool, modality: str, n_eval: int,
             list_name: str = "list.txt", eval_filter: Callable[[str], bool] | None = None) -> Task:
    root = DATA / folder
    names = _names(root, list_name)
    if eval_filter is not None:  # held-out frames only (e.g. TG3K's test_*) in the eval set
        ev = [n for n in names if eval_filter(n)]
        ev = _random_split(ev, min(n_eval, len(ev)))[1]
        pool = [n for n in names if not eval_filter(n)]
    else:
        pool, ev = _random_split(names, n_eval)
    return Task(name, "2d", unseen, modality, rgb, pool, ev, _folder_loader(root, rgb))


def _colondb(n_eval: int) -> Task:
    root = DATA / "cvc_colondb"
    names = set(_names(root))
    order = np.random.default_rng(1234).permutation(len(COLONDB_SEQUENCES))
    pool, ev = [], []
    for rank, i in enumerate(order):
        a, b = COLONDB_SEQUENCES[i]
        frames = [str(f) for f in range(a, b + 1) if str(f) in names]
        (ev if rank % 2 else pool).extend(frames)
    ev = _random_split(sorted(ev, key=int), min(n_eval, len(ev)))[1]
    return Task("colondb", "2d", True, "colonoscopy (RGB)", True, sorted(pool, key=int), ev, _folder_loader(root, True))


def _ircad(structure: str) -> Callable[[], list]:
    def volumes() -> list:
        from llm4seg.io import read_image

        ct = read_image(DATA / "ircad17" / "ct.nii.gz").array
        labels = read_image(DATA / "ircad17" / "labels.nii.gz").array
        if structure == "liver":  # the organ as a whole: liver, tumour and the vessels inside it
            mask = liver_reference(labels)
        else:
            mask = labels == {"portal_vein": 3, "bone": 6}[structure]
        return [("ircad17", ct, mask.astype(np.uint8), WINDOWS["bone" if structure == "bone" else "abdomen"])]

    return volumes


def _hippocampus(count: int = 3, first: int = 0) -> list:
    from llm4seg.io import read_image

    root = DATA / "hippocampus"
    out = []
    for name in _names(root)[first:first + count]:
        image = read_image(root / "images" / f"{name}.nii.gz").array
        labels = read_image(root / "labels" / f"{name}.nii.gz").array
        out.append((name, image, (np.rint(labels) > 0).astype(np.uint8), None))
    return out


def tasks(n_eval: int = 200) -> dict[str, Task]:
    """All tasks, by name."""
    out = {
        "busi": _task_2d("busi", "busi", rgb=False, unseen=False, modality="breast ultrasound", n_eval=n_eval,
                         list_name="busi_train.txt"),
        "isic": _task_2d("isic", "isic", rgb=True, unseen=False, modality="dermoscopy (RGB)", n_eval=n_eval),
        "clinicdb": _task_2d("clinicdb", "cvc_clinicdb", rgb=True, unseen=False, modality="colonoscopy (RGB)",
                             n_eval=n_eval),
        "tg3k": _task_2d("tg3k", "tg3k", rgb=False, unseen=False, modality="thyroid ultrasound", n_eval=n_eval,
                         eval_filter=lambda n: n.startswith("test_")),
        "colondb": _colondb(n_eval),
    }
    for s in ("liver", "portal_vein", "bone"):
        out[s] = Task(s, "3d", s != "liver", "CT", volumes=_ircad(s))
    out["hippocampus"] = Task("hippocampus", "3d", True, "MRI", volumes=_hippocampus)
    return out


def pick_items(task: Task, k: int, seed: int) -> list[str]:
    """k names from a 2D task's label pool (seeded)."""
    order = np.random.default_rng(seed).permutation(len(task.pool))
    return [task.pool[i] for i in order[:k]]


def pick_slices(mask: np.ndarray, k: int, seed: int) -> list[int]:
    """k slices spread over the structure's z extent: evenly (seed 0) or jittered within each interval."""
    zs = np.flatnonzero(mask.reshape(len(mask), -1).any(axis=1))
    if len(zs) <= k:
        return [int(z) for z in zs]
    edges = np.linspace(0, len(zs), k + 1)
    if seed == 0:
        picks = (edges[:-1] + edges[1:]) / 2
    else:
        rng = np.random.default_rng(seed)
        picks = edges[:-1] + rng.uniform(0.15, 0.85, k) * np.diff(edges)
    return sorted({int(zs[min(len(zs) - 1, int(p))]) for p in picks})
