"""Regenerate ``sample_data/`` from the full data sets.

Usage (from the repository root)::

    python scripts/make_sample_data.py [--data ../shared/data] [--out sample_data]

BUSI: copies a few image/mask pairs unchanged (original file names, ``busi/images`` and ``busi/masks/0``).
CT: 3D-IRCADb-01 patient 17, downsampled in-plane 2x (512² -> 256², 0.743 -> 1.486 mm; CT by 2x2 mean rounded
to int16 HU, the liver label by 2x2 majority with ties counted as liver), cropped in z to the liver extent
± 5 slices and thinned to every second slice (1.6 -> 3.2 mm, a common clinical slice thickness; it halves
the file and the time to segment it), written as ``ircad17_ct.nii.gz`` and ``ircad17_liver_label.nii.gz`` with the affine updated for
the downsampling and crop. Liver label = liver (1) + liver tumour (2) + the parts of the portal vein (3),
venous system (4) and artery (5) enclosed by liver in an axial slice: in the source map these structures
are drawn over the liver, and the organ outline includes them. Output is deterministic.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import llm4seg.io  # noqa: E402
from llm4seg.io import ImageData, read_image, write_image, write_labels  # noqa: E402

llm4seg.io.GZIP_LEVEL = 9  # smallest files; output stays deterministic

BUSI_NAMES = ["benign (100)", "benign (20)", "benign (111)", "malignant (14)", "malignant (15)", "malignant (123)"]
Z_MARGIN = 5
FACTOR = 2
Z_STEP = 2


def make_busi(data: Path, out: Path) -> None:
    """Copy the chosen BUSI image/mask pairs byte for byte."""
    for sub in ("images", "masks/0"):
        (out / "busi" / sub).mkdir(parents=True, exist_ok=True)
        for name in BUSI_NAMES:
            shutil.copyfile(data / "busi" / sub / f"{name}.png", out / "busi" / sub / f"{name}.png")


def liver_mask(labels: np.ndarray) -> np.ndarray:
    """Liver organ mask from the IRCAD label map (Z, Y, X): liver, tumour and intrahepatic vessels."""
    base = np.isin(labels, (1, 2))
    filled = np.stack([ndi.binary_fill_holes(s) for s in base])
    return base | (filled & np.isin(labels, (3, 4, 5)))


def downsample(ct: np.ndarray, liver: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2 in-plane pooling: mean for CT (round half up, int16), majority (ties -> 1) for the liver."""
    z, y, x = ct.shape
    if y % FACTOR or x % FACTOR:
        raise ValueError(f"in-plane size {y}x{x} is not divisible by {FACTOR}")
    blocks = (z, y // FACTOR, FACTOR, x // FACTOR, FACTOR)
    ct_sum = ct.astype(np.int32).reshape(blocks).sum(axis=(2, 4))
    ct_ds = np.floor_divide(2 * ct_sum + FACTOR**2, 2 * FACTOR**2).astype(np.int16)
    liver_ds = (liver.reshape(blocks).sum(axis=(2, 4)) * 2 >= FACTOR**2).astype(np.uint8)
    return ct_ds, liver_ds


def make_ct(data: Path, out: Path) -> None:
    ct = read_image(data / "ircad17" / "ct.nii.gz")
    labels = read_image(data / "ircad17" / "labels.nii.gz")
    if ct.affine is None or ct.array.shape != labels.array.shape:
        raise ValueError("ircad17 CT and labels must be NIfTI volumes of the same shape")
    liver = liver_mask(labels.array)
    zs = np.flatnonzero(liver.any(axis=(1, 2)))
    z0, z1 = max(int(zs[0]) - Z_MARGIN, 0), min(int(zs[-1]) + Z_MARGIN + 1, liver.shape[0])
    ct_ds, liver_ds = downsample(ct.array[z0:z1:Z_STEP], liver[z0:z1:Z_STEP])
    # voxel (i', j', k') of the new grid sits at the centre of source voxels 2i'..2i'+1, 2j'..2j'+1, Z_STEP·k'+z0
    index_map = np.array([[FACTOR, 0, 0, (FACTOR - 1) / 2], [0, FACTOR, 0, (FACTOR - 1) / 2],
                          [0, 0, Z_STEP, z0], [0, 0, 0, 1]], dtype=np.float64)
    affine = ct.affine @ index_map
    spacing = (ct.spacing[0] * Z_STEP, ct.spacing[1] * FACTOR, ct.spacing[2] * FACTOR)
    meta = {"format": "nifti", "qform_code": ct.meta.get("qform_code", 0), "sform_code": ct.meta.get("sform_code", 2)}
    image = ImageData(ct_ds, spacing, affine, meta)
    write_image(out / "ircad17_ct.nii.gz", image, overwrite=True)
    write_labels(out / "ircad17_liver_label.nii.gz", liver_ds, like=image, overwrite=True)
    print(f"CT sample: z {z0}..{z1 - 1} of {ct.array.shape[0]}, shape {ct_ds.shape}, spacing "
          f"{tuple(round(s, 3) for s in spacing)} mm, liver voxels {int(liver_ds.sum())}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data",
                    help="folder with busi/ and ircad17/ (default: ../shared/data)")
    ap.add_argument("--out", type=Path, default=ROOT / "sample_data", help="output folder (default: sample_data)")
    args = ap.parse_args(argv)
    for sub in ("busi", "ircad17"):
        if not (args.data / sub).is_dir():
            ap.error(f"{args.data / sub} not found; pass --data pointing to the folder that holds busi/ and ircad17/")
    args.out.mkdir(parents=True, exist_ok=True)
    make_busi(args.data, args.out)
    make_ct(args.data, args.out)
    for f in sorted(args.out.rglob("*")):
        if f.is_file() and f.suffix != ".md":
            print(f"  {f.relative_to(args.out)}  {f.stat().st_size / 1e3:.0f} kB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
