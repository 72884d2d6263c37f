"""npe2 sample data: a breast-ultrasound image with its expert mask, and an abdominal CT with its liver label.

Files are read from ``sample_data/`` (repository root for source/editable installs, or
``napari_llm4seg/sample_data`` inside an installed wheel). Credits travel in each layer's metadata.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_llm4seg._reader import LayerData, layer_data

BUSI_DEFAULT = "benign (100)"
CT_FILE, LIVER_FILE = "ircad17_ct.nii.gz", "ircad17_liver_label.nii.gz"

BUSI_CREDIT = {
    "dataset": "Breast Ultrasound Images (BUSI)",
    "citation": "W. Al-Dhabyani, M. Gomaa, H. Khaled, A. Fahmy, Dataset of breast ultrasound images, "
                "Data in Brief 28 (2020) 104863. doi:10.1016/j.dib.2019.104863",
    "licence": "shared by its authors for research with the open-access Data in Brief article; cite the article "
               "wherever the images are shown or redistributed",
}
IRCAD_CREDIT = {
    "dataset": "3D-IRCADb-01, patient 17 (IRCAD, Strasbourg)",
    "citation": "3D-IRCADb-01 database, IRCAD, Strasbourg, France, "
                "https://www.ircad.fr/research/data-sets/liver-segmentation-3d-ircadb-01/",
    "licence": "research and education use, with citation of IRCAD",
    "processing": "in-plane 2x downsampled (2x2 mean for CT, majority for the label), cropped in z to the liver "
                  "extent +/- 5 slices; liver label includes tumours and vessels enclosed by the liver",
}


def sample_root() -> Path:
    """The ``sample_data`` folder: ``$LLM4SEG_SAMPLE_DATA``, the installed package copy, or the source tree's."""
    here = Path(__file__).resolve().parent
    candidates = [Path(os.environ["LLM4SEG_SAMPLE_DATA"])] if os.environ.get("LLM4SEG_SAMPLE_DATA") else []
    candidates += [here / "sample_data", here.parent / "sample_data"]
    for folder in candidates:
        if (folder / CT_FILE).is_file() or (folder / "busi").is_dir():
            return folder
    raise FileNotFoundError("napari-llm4seg sample data not found; looked in "
                            + ", ".join(str(c) for c in candidates)
                            + ". Reinstall the package or set LLM4SEG_SAMPLE_DATA to the sample_data folder")


def busi_names() -> list[str]:
    """Names (without .png) of the BUSI images shipped in ``sample_data/busi/images``."""
    return sorted(p.stem for p in (sample_root() / "busi" / "images").glob("*.png"))


def busi_sample(name: str = BUSI_DEFAULT) -> list[LayerData]:
    """The BUSI image ``name`` and its expert lesion mask (255 -> label 1)."""
    from llm4seg.io import read_image

    root = sample_root() / "busi"
    image_path, mask_path = root / "images" / f"{name}.png", root / "masks" / "0" / f"{name}.png"
    if not image_path.is_file():
        raise FileNotFoundError(f"{image_path} not found; available samples: {', '.join(busi_names())}")
    img, mask = read_image(image_path), read_image(mask_path)
    lesion = np.asarray(mask.array)
    lesion = (lesion.any(axis=-1) if lesion.ndim == 3 else lesion > 0).astype(np.uint8)
    credit = {"credit": BUSI_CREDIT, "sample": name}
    image = layer_data(img, image_path, layer_type="image", name=name, **credit)
    labels = layer_data(_with(mask, lesion), mask_path, layer_type="labels", name=f"{name} expert mask",
                        classes=["background", "lesion"], note="expert mask, 255 mapped to label 1", **credit)
    labels[1].update(opacity=0.5, features=_features(["background", "lesion"]))
    return [image, labels]


def ct_sample() -> list[LayerData]:
    """The abdominal CT sample (int16 HU, spacing as scale) and its liver label."""
    from llm4seg.io import read_image

    root = sample_root()
    ct, liver = read_image(root / CT_FILE), read_image(root / LIVER_FILE)
    credit = {"credit": IRCAD_CREDIT, "sample": "ircad17"}
    image = layer_data(ct, root / CT_FILE, layer_type="image", name="CT (3D-IRCADb-01 patient 17)", **credit)
    labels = layer_data(liver, root / LIVER_FILE, layer_type="labels", name="liver (reference)",
                        classes=["background", "liver"], **credit)
    labels[1].update(opacity=0.4, features=_features(["background", "liver"]))
    return [image, labels]


def _with(img: Any, array: np.ndarray) -> Any:
    from llm4seg.io import ImageData

    return ImageData(array, img.spacing, img.affine, {**img.meta, "rgb": False})


def _features(classes: list[str]) -> dict[str, list[Any]]:
    return {"index": list(range(len(classes))), "class": classes}
