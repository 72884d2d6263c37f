"""llm4seg.io: round trips, DICOM series, errors and atomic writes."""
from __future__ import annotations

import gzip
import random
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import llm4seg.io as lio
from llm4seg.io import ImageData, read_image, write_image, write_labels

ROOT = Path(__file__).resolve().parents[1]


def make_dicom_series(folder: Path, n: int = 6, *, slope: float = 1.0, intercept: float = -1024.0,
                      spacing: float = 2.5, series_uid: str | None = None, skip: tuple[int, ...] = (),
                      seed: int = 0, shape: tuple[int, int] = (8, 10)) -> np.ndarray:
    """Write a synthetic CT series (shuffled write order, extension-less names); return the expected HU (Z,Y,X)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    uid = series_uid or generate_uid()
    rows, cols = shape
    stored = rng.integers(0, 2000, size=(n, rows, cols)).astype(np.uint16)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    for pos, k in enumerate(order):
        if k in skip:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"IM{pos:04d}"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = "CT", uid, "1.2.3"
        ds.SeriesDescription = f"synthetic {n}"
        ds.InstanceNumber = n - k  # deliberately reversed: position must win
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-10.0, -20.0, 100.0 + k * spacing]
        ds.PixelSpacing = [0.8, 0.7]
        ds.SliceThickness = spacing
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelData = stored[k].tobytes()
        ds.save_as(folder / f"IM{pos:04d}", enforce_file_format=True)
    keep = [k for k in range(n) if k not in skip]
    return (stored[keep].astype(np.float64) * slope + intercept)


# ------------------------------------------------------------------------------------------------ NIfTI
def _nifti(path: Path, data: np.ndarray, affine: np.ndarray, **hdr) -> Path:
    img = nib.Nifti1Image(data, affine)
    for k, v in hdr.items():
        img.header[k] = v
    nib.save(img, path)
    return path


def test_nifti_roundtrip_keeps_affine_dtype_and_axis_order(tmp_path: Path) -> None:
    affine = np.array([[-0.75, 0.0, 0.01, 12.5], [0.0, -0.75, 0.0, -30.25], [0.0, 0.02, 2.5, 7.0], [0, 0, 0, 1]])
    vol = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7) - 1000  # file order (x, y, z)
    src = read_image(_nifti(tmp_path / "ct.nii.gz", vol, affine))
    assert src.array.dtype == np.int16 and src.array.shape == (7, 6, 5)  # (Z, Y, X)
    assert np.array_equal(src.array, vol.transpose(2, 1, 0))
    assert src.spacing == pytest.approx((2.5001, 0.75, 0.75), rel=1e-3)
    labels = (src.array > -900).astype(np.uint8) * 3
    for name in ("labels.nii.gz", "labels.nii"):
        out = read_image(write_labels(tmp_path / name, labels, like=src))
        assert np.array_equal(out.array, labels) and out.array.dtype == np.uint8
        assert np.array_equal(out.affine, src.affine)
    again = read_image(write_image(tmp_path / "copy.nii.gz", src))
    assert np.array_equal(again.array, src.array) and again.array.dtype == np.int16
    assert np.array_equal(again.affine, src.affine)


def test_nifti_qform_only_affine_restored_exactly(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.zeros((4, 5, 3), np.uint8), None)
    img.set_qform(np.array([[0, -0.9, 0, 5.1], [1.1, 0, 0, -3.3], [0, 0, 2.2, 0.7], [0, 0, 0, 1]]), code=1)
    img.set_sform(None, code=0)
    nib.save(img, tmp_path / "q.nii")
    src = read_image(tmp_path / "q.nii")
    out = read_image(write_labels(tmp_path / "l.nii.gz", np.ones(src.array.shape, np.uint8), like=src))
    assert np.array_equal(out.affine, src.affine)


def test_nifti_scaling_applied_and_large_labels(tmp_path: Path) -> None:
    raw = np.array([[[0, 1000, 2000]]], dtype=np.uint16)
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(raw.shape)
    hdr.set_data_dtype(np.uint16)
    hdr.set_slope_inter(1, -1024)
    hdr.set_sform(np.eye(4), code=2)
    hdr["vox_offset"] = 352
    with open(tmp_path / "s.nii", "wb") as fh:  # raw write: nibabel's writer would recompute the scaling
        hdr.write_to(fh)
        fh.write(b"\0" * (352 - fh.tell()) + raw.tobytes(order="F"))
    out = read_image(tmp_path / "s.nii")
    assert out.array.dtype == np.int16 and out.array.ravel().tolist() == [-1024, -24, 976]
    big = np.array([[0, 300], [7, 65535]])
    back = read_image(write_labels(tmp_path / "big.nii.gz", big))
    assert back.array.dtype == np.uint16 and np.array_equal(back.array, big)


def test_corrupt_nifti_gives_clear_error(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(-1000, 1000, (20, 20, 20)).astype(np.int16)
    good = _nifti(tmp_path / "good.nii.gz", noise, np.eye(4))
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # truncated
    with pytest.raises(ValueError, match=r"bad\.nii\.gz.*NIfTI"):
        read_image(bad)
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(gzip.compress(b"not a nifti header" * 30))
    with pytest.raises(ValueError, match="junk.nii.gz"):
        read_image(junk)
    other = tmp_path / "data.xyz"
    other.write_text("x")
    with pytest.raises(ValueError, match=r"unsupported.*NIfTI"):
        read_image(other)
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.nii.gz")


# ------------------------------------------------------------------------------------------- PNG / TIFF
def test_png_labels_values_exact(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 2], [3, 255, 7]], dtype=np.int64)
    out = read_image(write_labels(tmp_path / "m.png", labels))
    assert out.array.dtype == np.uint8 and np.array_equal(out.array, labels)
    with pytest.raises(ValueError, match="2D"):
        write_labels(tmp_path / "v.png", np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(ValueError, match="integer"):
        write_labels(tmp_path / "f.png", np.full((2, 2), 0.5))


def test_rgb_png_reads_channels_last(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 255, (6, 5, 3), dtype=np.uint8)
    out = read_image(write_image(tmp_path / "c.png", ImageData(rgb, (1.0, 1.0))))
    assert out.rgb and out.spatial_shape == (6, 5) and np.array_equal(out.array, rgb)


def test_bmp_reads_gray_and_colour_and_is_never_written(tmp_path: Path) -> None:
    import imageio.v3 as iio

    rng = np.random.default_rng(2)
    gray, rgb = rng.integers(0, 255, (7, 9), dtype=np.uint8), rng.integers(0, 255, (7, 9, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "g.bmp", gray)
    iio.imwrite(tmp_path / "c.BMP", rgb)
    g, c = read_image(tmp_path / "g.bmp"), read_image(tmp_path / "c.BMP")
    assert not g.rgb and np.array_equal(g.array, gray)
    assert c.rgb and c.spatial_shape == (7, 9) and np.array_equal(c.array, rgb)
    with pytest.raises(ValueError, match=r"\.png"):
        write_labels(tmp_path / "m.bmp", np.ones((3, 3), np.uint8))
    assert not (tmp_path / "m.bmp").exists()


def test_tiff_3d_roundtrip_with_spacing(tmp_path: Path) -> None:
    labels = np.random.default_rng(0).integers(0, 4, (5, 7, 9)).astype(np.uint8)
    like = ImageData(np.zeros(labels.shape, np.int16), (2.5, 0.5, 0.25))
    out = read_image(write_labels(tmp_path / "l.tif", labels, like=like))
    assert out.array.shape == (5, 7, 9) and np.array_equal(out.array, labels)
    assert out.spacing == (2.5, 0.5, 0.25)
    with pytest.raises(ValueError, match="does not match"):
        write_labels(tmp_path / "x.tif", labels[:2], like=like)


# ------------------------------------------------------------------------------------------------ DICOM
def test_dicom_series_order_hu_spacing_affine(tmp_path: Path) -> None:
    expected = make_dicom_series(tmp_path / "series")
    img = read_image(tmp_path / "series")
    assert img.array.dtype == np.int16 and img.array.shape == (6, 8, 10)
    assert np.array_equal(img.array, expected)
    assert img.spacing == pytest.approx((2.5, 0.8, 0.7))
    # RAS affine: x, y negated from LPS; voxel (i=col, j=row, k=slice)
    assert np.allclose(img.affine @ [0, 0, 0, 1], [10.0, 20.0, 100.0, 1])
    assert np.allclose(img.affine @ [1, 1, 1, 1], [10.0 - 0.7, 20.0 - 0.8, 102.5, 1])
    assert img.meta["modality"] == "CT" and img.meta["rescale_intercept"] == -1024
    one = read_image(sorted((tmp_path / "series").iterdir())[0])  # a single file -> its series
    assert np.array_equal(one.array, expected)
    nii = read_image(write_labels(tmp_path / "l.nii.gz", img.array > 0, like=img))
    assert np.allclose(nii.affine, img.affine, atol=1e-5) and np.array_equal(nii.array, img.array > 0)


def test_dicom_float_rescale_and_missing_slice_warning(tmp_path: Path) -> None:
    expected = make_dicom_series(tmp_path / "s", n=7, slope=0.5, intercept=-1000.0, skip=(3,))
    with pytest.warns(UserWarning, match="missing"):
        img = read_image(tmp_path / "s")
    assert img.array.dtype == np.float32 and np.allclose(img.array, expected)
    assert img.spacing[0] == pytest.approx(2.5)


def test_dicom_mixed_series_warns_and_takes_largest(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    big = make_dicom_series(folder / "a", n=6, series_uid="1.2.826.0.1.1")
    make_dicom_series(folder / "b", n=3, series_uid="1.2.826.0.1.2", seed=5)
    for sub in ("a", "b"):
        for f in (folder / sub).iterdir():
            f.rename(folder / f"{sub}_{f.name}")
    (folder / "notes.txt").write_text("not dicom")
    with pytest.warns(UserWarning, match=r"2 DICOM series.*1\.2\.826\.0\.1\.2"):
        img = read_image(folder)
    assert img.meta["series_uid"] == "1.2.826.0.1.1" and np.array_equal(img.array, big)
    with pytest.raises(ValueError, match="no DICOM"):
        read_image(folder / "b")  # now empty folder


# -------------------------------------------------------------------------------------- safe writes
def test_existing_file_not_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "m.png"
    write_labels(target, np.ones((3, 3), np.uint8))
    before = target.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_labels(target, np.zeros((3, 3), np.uint8))
    assert target.read_bytes() == before
    write_labels(target, np.zeros((3, 3), np.uint8), overwrite=True)
    assert read_image(target).array.max() == 0


def test_atomic_write_leaves_no_temp_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_labels(tmp_path / "ok.nii.gz", np.ones((2, 3, 4), np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["ok.nii.gz"]

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(lio, "_write_png", boom)
    with pytest.raises(RuntimeError):
        write_labels(tmp_path / "fail.png", np.ones((3, 3), np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["ok.nii.gz"]


def test_unwritable_folder_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(lio.tempfile, "mkstemp", denied)
    with pytest.raises(PermissionError, match=str(tmp_path)):
        write_labels(tmp_path / "m.png", np.ones((3, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_labels(tmp_path / "nope" / "m.png", np.ones((3, 3), np.uint8))


def test_sample_data_files_are_consistent() -> None:
    ct = read_image(ROOT / "sample_data" / "ircad17_ct.nii.gz")
    liver = read_image(ROOT / "sample_data" / "ircad17_liver_label.nii.gz")
    assert ct.array.dtype == np.int16 and ct.array.shape[1:] == (256, 256)
    assert ct.spacing[1:] == pytest.approx((1.486, 1.486), rel=1e-4)
    assert np.array_equal(ct.affine, liver.affine) and liver.array.shape == ct.array.shape
    assert set(np.unique(liver.array).tolist()) == {0, 1}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        busi = read_image(ROOT / "sample_data" / "busi" / "images" / "benign (100).png")
    assert busi.array.ndim == 2 and busi.array.dtype == np.uint8
