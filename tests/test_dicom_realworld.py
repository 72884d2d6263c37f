"""DICOM series as scanners and PACS exports write them: compressed pixel data, missing geometry, several phases,
oblique planes, mixed sizes. Each gives the right volume or a warning/error that names the problem."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from llm4seg.io import read_image
from test_io import make_dicom_series



def _edit(folder: Path, change) -> None:
    """Rewrite every file of ``folder`` after ``change(dataset)``."""
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        change(ds)
        ds.save_as(f, enforce_file_format=True)


def _by_position(folder: Path) -> list[Path]:
    return sorted(folder.iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))


def test_rle_compressed_series_reads_exactly(tmp_path: Path) -> None:
    from pydicom.uid import RLELossless

    expected = make_dicom_series(tmp_path / "s")
    _edit(tmp_path / "s", lambda ds: ds.compress(RLELossless))
    assert pydicom.dcmread(next((tmp_path / "s").iterdir())).file_meta.TransferSyntaxUID == RLELossless
    img = read_image(tmp_path / "s")
    assert np.array_equal(img.array, expected)


def test_missing_positions_fall_back_to_instance_numbers_with_a_warning(tmp_path: Path) -> None:
    expected = make_dicom_series(tmp_path / "s")  # InstanceNumber runs against the position there

    def drop(ds):
        del ds.ImagePositionPatient

    _edit(tmp_path / "s", drop)
    with pytest.warns(UserWarning, match="lack ImagePositionPatient.*InstanceNumber.*2.5 mm"):
        img = read_image(tmp_path / "s")
    assert np.array_equal(img.array, expected[::-1]) and img.spacing[0] == pytest.approx(2.5)
    assert img.affine is None  # no position in space is claimed: writers fall back to the spacing


def test_two_phases_at_the_same_positions_warn(tmp_path: Path) -> None:
    folder = tmp_path / "two"
    make_dicom_series(folder / "a", n=4, series_uid="1.2.3.4")
    make_dicom_series(folder / "b", n=4, series_uid="1.2.3.4", seed=7)
    for sub in ("a", "b"):
        for f in (folder / sub).iterdir():
            f.rename(folder / f"{sub}_{f.name}")
    with pytest.warns(UserWarning, match="8 slices at only 4 distinct positions"):
        img = read_image(folder)
    assert img.array.shape[0] == 8


def test_oblique_plane_gives_a_rotated_affine(tmp_path: Path) -> None:
    make_dicom_series(tmp_path / "s", n=3)
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    row, col = np.array([c, s, 0.0]), np.array([-s, c, 0.0])

    def tilt(ds):
        k = (float(ds.ImagePositionPatient[2]) - 100.0) / 2.5  # slice index from the axial position
        ds.ImageOrientationPatient = [*row, *col]
        ds.ImagePositionPatient = [-10.0, -20.0, 100.0 + 2.5 * k]

    _edit(tmp_path / "s", tilt)
    img = read_image(tmp_path / "s")
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(img.affine[:3, 0], lps_to_ras * row * 0.7, atol=1e-6)  # column step: row direction
    np.testing.assert_allclose(img.affine[:3, 1], lps_to_ras * col * 0.8, atol=1e-6)
    np.testing.assert_allclose(img.affine[:3, 2], [0, 0, 2.5], atol=1e-6)


def test_a_slice_of_another_size_is_refused_with_the_reason(tmp_path: Path) -> None:
    make_dicom_series(tmp_path / "s", n=4)
    odd = _by_position(tmp_path / "s")[2]
    ds = pydicom.dcmread(odd)
    ds.Rows, ds.Columns = 6, 10
    ds.PixelData = np.zeros((6, 10), np.uint16).tobytes()
    ds.save_as(odd, enforce_file_format=True)
    with pytest.raises(ValueError, match=r"slice size \(6, 10\) differs from the series' \(8, 10\)"):
        read_image(tmp_path / "s")
