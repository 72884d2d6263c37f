"""The image sets of ``benchmarks.clicks``: 2D cases (image, true mask) and the models compared on each.

Each set names the shipped automatic model a user of that modality segments with (the "auto" and "seeds"
arms) and is scored on items that no shipped model trained on or was chosen by, except BUSI, whose 90
validation images chose the automatic models' weights (never the click model's: it keeps its last weights).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from llm4seg.preprocess import WINDOWS

from .fewshot_tasks import DATA, _folder_loader, _hippocampus, _names, _random_split
from .ct_fewshot import liver_reference

SPLITS = Path(__file__).resolve().parents[1] / "scripts" / "splits"


@dataclass
class Case:
    """One 2D image to correct: ``image`` is a 2D image, or a volume with the slice ``z``."""

    name: str
    image: np.ndarray
    target: np.ndarray
    z: int | None = None
    window: tuple[float, float] | None = None

    @property
    def slice(self) -> np.ndarray:
        return self.image if self.z is None else self.image[self.z]


@dataclass(frozen=True)
class ClickSet:
    name: str
    what: str
    auto_model: str  # the shipped automatic model of this modality
    unseen: bool


SETS = {
    "busi": ClickSet("busi", "BUSI validation (90, own split)", "busi-lesion", False),
    "isic": ClickSet("isic", "ISIC 2018 held-out (439)", "isic-lesion", False),
    "tg3k": ClickSet("tg3k", "TG3K test_* (359)", "thyroid", False),
    "colondb": ClickSet("colondb", "CVC-ColonDB (379, unseen)", "polyp", True),
    "hippocampus": ClickSet("hippocampus", "MSD hippocampus MRI, 3 volumes (unseen)", "gray-start", True),
    "liver": ClickSet("liver", "ircad17 liver CT, held-out z 72-118", "ct-liver", False),
    # tuning sets (the zoo's validation splits, never trained on): refine's options are chosen here, not above
    "isic-val": ClickSet("isic-val", "ISIC 2018 zoo validation (100, tuning)", "isic-lesion", False),
    "clinicdb-val": ClickSet("clinicdb-val", "CVC-ClinicDB zoo validation (100, tuning)", "polyp", False),
}
REPORTED = ("busi", "isic", "tg3k", "colondb", "hippocampus", "liver")


def _lines(path: Path) -> list[str]:
    return [n.strip() for n in path.read_text().splitlines() if n.strip()]


def _sample(names: list[str], n: int | None) -> list[str]:
    return names if n is None or n >= len(names) else _random_split(names, n, seed=7)[1]


def _folder(folder: str, names: list[str], rgb: bool) -> Iterator[Case]:
    load = _folder_loader(DATA / folder, rgb)
    for name in names:
        image, mask = load(name)
        yield Case(f"{folder}/{name}", image, mask)


def _slices(name: str, volume: np.ndarray, mask: np.ndarray, zs: list[int], window) -> Iterator[Case]:
    for z in zs:
        yield Case(f"{name}/z{z}", volume, mask[z], z, window)


def cases(set_name: str, n: int | None = None) -> Iterator[Case]:
    """Up to ``n`` cases of a set (a seeded sample; all when None), with a non-empty target."""
    if set_name == "busi":
        yield from _folder("busi", _sample(_lines(SPLITS / "busi-lesion.val.txt"), n), rgb=False)
    elif set_name in ("isic-val", "clinicdb-val"):
        folder = {"isic-val": "isic", "clinicdb-val": "cvc_clinicdb"}[set_name]
        yield from _folder(folder, _sample(_lines(SPLITS / f"zoo.val.{folder}.txt"), n), rgb=True)
    elif set_name == "isic":
        yield from _folder("isic", _sample(_lines(SPLITS / "isic-lesion.heldout.txt"), n), rgb=True)
    elif set_name == "tg3k":
        yield from _folder("tg3k", _sample([t for t in _names(DATA / "tg3k") if t.startswith("test_")], n), rgb=False)
    elif set_name == "colondb":
        yield from _folder("cvc_colondb", _sample(_names(DATA / "cvc_colondb"), n), rgb=True)
    elif set_name == "hippocampus":
        vols = _hippocampus(3)
        per = None if n is None else max(1, -(-n // len(vols)))
        for name, image, mask, window in vols:
            zs = [int(z) for z in np.flatnonzero(mask.reshape(len(mask), -1).any(1))]
            yield from _slices(name, image, mask, _spread(zs, per), window)
    elif set_name == "liver":
        from llm4seg.io import read_image

        ct = read_image(DATA / "ircad17" / "ct.nii.gz").array
        mask = liver_reference(read_image(DATA / "ircad17" / "labels.nii.gz").array)
        zs = [z for z in range(72, 119) if mask[z].any()]
        yield from _slices("ircad17", ct, mask, _spread(zs, n), WINDOWS["abdomen"])
    else:
        raise ValueError(f"unknown set {set_name!r}: choose from {sorted(SETS)}")


def _spread(zs: list[int], n: int | None) -> list[int]:
    if n is None or n >= len(zs):
        return zs
    return sorted({zs[int(i)] for i in np.linspace(0, len(zs) - 1, n)})
