"""`make models` (scripts/make_models.sh): the shipped recipes run end to end, for two steps, on tiny data."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pytest

from _factories import disk_image
from llm4seg.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # trains every recipe end to end: not in `make test-fast`


def _tiny_data(root: Path) -> None:
    busi = root / "busi"
    (busi / "images").mkdir(parents=True)
    (busi / "masks" / "0").mkdir(parents=True)
    for i in range(6):
        img, mask = disk_image(64, 72, seed=i)
        iio.imwrite(busi / "images" / f"case ({i}).png", img)
        iio.imwrite(busi / "masks" / "0" / f"case ({i}).png", mask * 255)
    for folder, names, rgb in (("isic", [f"ISIC_{i:07d}" for i in range(4)], True),
                               ("cvc_clinicdb", [str(i) for i in range(1, 5)], True),
                               ("tg3k", ["train_0001", "val_0002", "val_0003", "test_0004"], False)):
        (root / folder / "images").mkdir(parents=True)
        (root / folder / "masks" / "0").mkdir(parents=True)
        for i, name in enumerate(names):
            img, mask = disk_image(48, 56, seed=10 + i)
            iio.imwrite(root / folder / "images" / f"{name}.jpg", np.stack([img] * 3, -1) if rgb else img)
            iio.imwrite(root / folder / "masks" / "0" / f"{name}.png", mask * 255)
        (root / folder / "list.txt").write_text("\n".join(names) + "\n")
    ct = root / "ircad17"
    ct.mkdir()
    img, mask = disk_image(64, 64)
    volume = np.stack([img.astype(np.int16) * 4 - 1000] * 8, axis=-1)  # (x, y, z) as NIfTI stores it
    labels = np.stack([mask] * 8, axis=-1).astype(np.uint8)
    labels[:4, :4] = 6  # a class the recipe does not train (bone)
    affine = np.diag([0.7, 0.7, 1.6, 1.0])
    nib.save(nib.Nifti1Image(volume, affine), ct / "ct.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), ct / "labels.nii.gz")
    (ct / "labels.json").write_text(json.dumps({"0": "background", "1": "liver", "2": "liver tumour", "6": "bone"}))


def test_make_models_recipes_run_end_to_end(tmp_path):
    _tiny_data(tmp_path / "data")
    env = {**os.environ, "PY": sys.executable, "DATA": str(tmp_path / "data"), "RUNS": str(tmp_path / "runs"),
           "THREADS": "1", "SHIP": "0", "BUSI_SCHEDULE": "--steps 2", "GRAY_SCHEDULE": "--steps 2",
           "CT_SCHEDULE": "--steps 2",
           "CT_TRAIN_Z": "0,5", "CT_TEST_Z": "5,8", "GENERALIST_SCHEDULE": "--steps 2 --val-every 1 --warmup 1",
           "SPECIALIST_SCHEDULE": "--steps 2 --val-every 1 --warmup 1",
           "CLICKS_SCHEDULE": "--steps 2 --val-every 1 --warmup 1",
           "GENERALIST_INIT": str(tmp_path / "runs" / "generalist.safetensors"),
           "ULTRASOUND_INIT": str(tmp_path / "runs" / "busi-lesion.safetensors")}
    weights = sorted((ROOT / "src" / "llm4seg" / "weights").iterdir())
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "make_models.sh"), "all"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name, classes in (("busi-lesion", ["background", "foreground"]), ("gray-start", ["background", "foreground"]),
                          ("ct-liver", ["background", "liver"])):
        model = load_checkpoint(tmp_path / "runs" / f"{name}.safetensors", device="cpu")
        assert model.card.training["steps"] == 2 and model.card.preprocessing["size"] == 128
        assert model.card.classes == classes and model.config.in_channels == 1
    ct = load_checkpoint(tmp_path / "runs" / "ct-liver.safetensors", device="cpu")
    assert ct.card.preprocessing["window"] == [40.0, 400.0]  # the abdomen window is part of the recipe
    held = json.loads((tmp_path / "runs" / "ct-liver.heldout.json").read_text())
    assert {"iou", "dice", "n"} <= set(held) and held["n"] == 3
    generalist = load_checkpoint(tmp_path / "runs" / "generalist.safetensors", device="cpu")
    assert generalist.config.in_channels == 3 and generalist.card.classes == ["background", "foreground"]
    assert generalist.card.training["steps"] == 2 and generalist.card.preprocessing["window"] is None
    assert "tg3k" in generalist.card.training["data"] and "colondb" not in generalist.card.training["data"]
    for name, part, init, channels, size in (("polyp", "cvc_clinicdb", "generalist", 3, 256),  # small polyps
                                             ("isic-lesion", "isic", "generalist", 3, 128),
                                             ("thyroid", "tg3k", "busi-lesion", 1, 256)):  # from the ultrasound model
        model = load_checkpoint(tmp_path / "runs" / f"{name}.safetensors", device="cpu")
        training = model.card.training
        assert model.config.in_channels == channels and training["steps"] == 2 and training["data"] == part
        assert training["init"].endswith(f"{init}.safetensors")
        assert model.card.preprocessing["size"] == size
    clicks = load_checkpoint(tmp_path / "runs" / "generalist-clicks.safetensors", device="cpu")
    assert clicks.config.prompts == ("previous", "positive", "negative") and clicks.card.training["prompts"] == "clicks"
    assert clicks.card.training["init"].endswith("generalist.safetensors") and clicks.config.in_channels == 3
    assert sorted((ROOT / "src" / "llm4seg" / "weights").iterdir()) == weights  # SHIP=0 left them alone
