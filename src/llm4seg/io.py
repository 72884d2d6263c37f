"""Read images and write label maps: PNG/JPEG, TIFF, NIfTI and DICOM series.

Array axes follow napari: ``(Y, X)`` or ``(Y, X, C)`` for 2D images and ``(Z, Y, X)`` for volumes;
``spacing`` lists one value per spatial axis in the same order. ``affine`` (NIfTI and DICOM only) maps
voxel indices in the *file* order ``(x, y, z)`` - the array axes reversed - to world millimetres in RAS+
(the NIfTI convention; DICOM's LPS positions are converted). Every write is atomic: the data go to a
temporary file in the destination folder, are flushed to disk, then renamed over the destination.
"""
from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from llm4seg._io_dicom import is_dicom_file, looks_like_dicom_folder, read_dicom
from llm4seg.imagedata import SUPPORTED_FORMATS, ImageData

__all__ = ["ImageData", "read_image", "write_labels", "write_image", "looks_like_dicom_folder", "SUPPORTED_FORMATS",
           "RASTER_EXTS", "TIFF_EXTS", "NIFTI_EXTS"]

RASTER_EXTS = (".png", ".jpg", ".jpeg", ".bmp")  # 2D gray or colour pictures, read with imageio
TIFF_EXTS = (".tif", ".tiff")
NIFTI_EXTS = (".nii.gz", ".nii")
_READ_ONLY = (".jpg", ".jpeg", ".bmp")  # lossy, or no uint16: labels and images are written as .png instead
_NIFTI, _TIFF, _RASTER, _DICOM = "nifti", "tiff", "raster", "dicom"
GZIP_LEVEL = 6  # compression level of .nii.gz output (1 fast .. 9 small)
_UMASK = os.umask(0o022)
os.umask(_UMASK)


# ----------------------------------------------------------------------------------------------- reading
def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(NIFTI_EXTS):
        return _NIFTI
    if name.endswith(TIFF_EXTS):
        return _TIFF
    if name.endswith(RASTER_EXTS):
        return _RASTER
    if name.endswith(".dcm"):
        return _DICOM
    return None


def _suffix(path: Path) -> str:
    return ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix


def read_image(path: str | os.PathLike) -> ImageData:
    """Read a PNG/JPEG/BMP/TIFF file, a NIfTI file or a DICOM series (folder, or one of its files)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_dir():
        return read_dicom(p)
    kind = _kind(p)
    if kind == _NIFTI:
        return _read_nifti(p)
    if kind == _TIFF:
        return _guard(p, "TIFF", _read_tiff)
    if kind == _RASTER:
        return _guard(p, "PNG/JPEG/BMP", _read_raster)
    if kind == _DICOM or is_dicom_file(p):
        return read_dicom(p)
    raise ValueError(f"{p}: unsupported file type {_suffix(p) or '(no extension)'!r}; "
                     f"supported formats: {SUPPORTED_FORMATS}")


def _guard(p: Path, what: str, reader: Callable[[Path], ImageData]) -> ImageData:
    try:
        return reader(p)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as err:
        raise ValueError(f"cannot read {p} as {what} ({type(err).__name__}: {err}); the file may be corrupt "
                         f"or truncated. Supported formats: {SUPPORTED_FORMATS}") from err


def _read_raster(p: Path) -> ImageData:
    import imageio.v3 as iio

    arr = np.asarray(iio.imread(p))
    if arr.ndim not in (2, 3):
        raise ValueError(f"expected a 2D gray or colour image, got an array of shape {arr.shape}")
    rgb = arr.ndim == 3
    return ImageData(arr, (1.0, 1.0), None, {"format": p.suffix.lower().lstrip("."), "source": str(p),
                                             "rgb": rgb})


def _read_tiff(p: Path) -> ImageData:
    import tifffile

    with tifffile.TiffFile(p) as tif:
        series = tif.series[0]
        arr = np.asarray(series.asarray())
        axes = series.axes
        shaped = tif.shaped_metadata[0] if tif.shaped_metadata else {}
        ij = tif.imagej_metadata or {}
        res = None
        if ij and "XResolution" in tif.pages[0].tags:
            xr, yr = tif.pages[0].tags["XResolution"].value, tif.pages[0].tags["YResolution"].value
            res = (yr[1] / yr[0], xr[1] / xr[0]) if xr[0] and yr[0] else None
    rgb = axes.endswith("S") and arr.shape[-1] in (3, 4)
    nsp = arr.ndim - int(rgb)
    spacing: tuple[float, ...] = (1.0,) * nsp
    if isinstance(shaped.get("spacing"), (list, tuple)) and len(shaped["spacing"]) == nsp:
        spacing = tuple(float(s) for s in shaped["spacing"])
    elif res is not None and nsp >= 2:
        spacing = (float(ij.get("spacing", 1.0)),) * (nsp - 2) + res
    meta = {"format": "tiff", "source": str(p), "rgb": bool(rgb), "axes": axes}
    return ImageData(arr, spacing, None, meta)


def _read_nifti(p: Path) -> ImageData:
    import nibabel as nib

    try:
        img = nib.load(str(p), mmap=False)
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise ValueError(f"{type(img).__name__} is not a NIfTI image")
        hdr = img.header
        raw = np.asarray(img.dataobj.get_unscaled())
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as err:
        raise ValueError(f"cannot read {p} as NIfTI ({type(err).__name__}: {err}); the file may be corrupt or "
                         f"truncated. Supported formats: {SUPPORTED_FORMATS}") from err
    # nibabel moves scl_slope/scl_inter from the header into the array proxy on load
    slope, inter = (float(getattr(img.dataobj, k, v)) for k, v in (("slope", 1.0), ("inter", 0.0)))
    if not (np.isfinite(slope) and slope != 0):
        slope, inter = 1.0, 0.0
    inter = inter if np.isfinite(inter) else 0.0
    arr = raw if slope == 1 and inter == 0 else _rescale(raw, slope, inter)
    while arr.ndim > 3 and arr.shape[-1] == 1:   # (x, y, z, 1) -> (x, y, z)
        arr = arr[..., 0]
    arr = np.ascontiguousarray(arr.transpose(tuple(reversed(range(arr.ndim)))))
    zooms = [float(z) for z in hdr.get_zooms()[: arr.ndim]]
    spacing = tuple(z if np.isfinite(z) and z > 0 else 1.0 for z in reversed(zooms))
    meta: dict[str, Any] = {
        "format": "nifti", "source": str(p), "axes": "ZYX"[-arr.ndim:] if arr.ndim <= 3 else None,
        "file_dtype": str(hdr.get_data_dtype()), "qform_code": int(hdr["qform_code"]),
        "sform_code": int(hdr["sform_code"]), "xyzt_units": list(hdr.get_xyzt_units()),
        "descrip": hdr["descrip"].item().decode("latin-1", "replace").strip("\x00 "),
        "scl_slope": slope, "scl_inter": inter,
    }
    if meta["sform_code"] == 0 and meta["qform_code"] > 0:  # kept so that writers restore the qform exactly
        meta["qform_params"] = {k: float(hdr[k]) for k in ("quatern_b", "quatern_c", "quatern_d", "qoffset_x",
                                                           "qoffset_y", "qoffset_z")}
        meta["qform_params"]["pixdim"] = [float(v) for v in hdr["pixdim"][:4]]
    return ImageData(arr, spacing, np.asarray(img.affine, dtype=np.float64), meta)


def _rescale(raw: np.ndarray, slope: float, inter: float) -> np.ndarray:
    """raw * slope + inter, kept integral (int16/int32) when slope and intercept are integers."""
    if np.issubdtype(raw.dtype, np.integer) and slope.is_integer() and inter.is_integer():
        lo, hi = (int(raw.min()), int(raw.max())) if raw.size else (0, 0)
        vals = [lo * slope + inter, hi * slope + inter]
        for dt in (np.int16, np.int32):
            if np.iinfo(dt).min <= min(vals) and max(vals) <= np.iinfo(dt).max:
                return (raw.astype(np.int64) * int(slope) + int(inter)).astype(dt)
    return (raw.astype(np.float32) * np.float32(slope) + np.float32(inter)).astype(np.float32)


# ----------------------------------------------------------------------------------------------- writing
def _atomic_write(path: str | os.PathLike, write: Callable[[Path], None], overwrite: bool) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, fsync it, then rename it over ``path``."""
    path = Path(path).expanduser().absolute()
    folder = path.parent
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name, e.g. {path / 'labels.nii.gz'}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it, or choose another name")
    if not folder.is_dir():
        raise FileNotFoundError(f"output folder {folder} does not exist; create it first")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + _suffix(path), dir=folder)
    except PermissionError as err:
        raise PermissionError(f"cannot write to folder {folder}: permission denied; "
                              "choose a folder you can write to") from err
    except OSError as err:
        raise OSError(err.errno, f"cannot create a file in folder {folder}: {err.strerror or err}") from err
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} appeared while writing; pass overwrite=True to replace it")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename durable; not supported on every platform
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def _as_labels(labels: Any) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.size == 0:
        raise ValueError(f"labels are empty (shape {arr.shape})")
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.isfinite(arr)) \
                or not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"labels must hold integer class values, got {arr.dtype} with non-integer values; "
                             "threshold probabilities (e.g. probs > 0.5) before writing")
    lo, hi = arr.min(), arr.max()
    if lo < 0:
        raise ValueError(f"labels must be >= 0, found {lo}")
    for dt in (np.uint8, np.uint16, np.uint32):
        if hi <= np.iinfo(dt).max:
            return arr.astype(dt, copy=False)
    raise ValueError(f"label value {hi} is too large (max {np.iinfo(np.uint32).max})")


def write_labels(path: str | os.PathLike, labels: Any, like: ImageData | None = None, *,
                 overwrite: bool = False, classes: Sequence[str] | None = None) -> Path:
    """Write a label map (uint8, or uint16/uint32 when values need it) to .nii/.nii.gz, .png (2D) or .tif.

    ``like`` is the image the labels belong to: its spacing, affine and NIfTI codes are restored, so
    ``read_image`` of the result gives back the same array and affine. Atomic; never overwrites unless asked.
    ``classes`` (background first) also go to a ``labels.json`` beside it (:func:`write_class_names`).
    """
    p = Path(path).expanduser()
    kind = _kind(p)
    if kind not in (_NIFTI, _RASTER, _TIFF) or p.name.lower().endswith(_READ_ONLY):
        raise ValueError(f"{p}: cannot write labels as {_suffix(p) or '(no extension)'!r}; "
                         "use .nii.gz, .nii, .png (2D) or .tif/.tiff (lossless formats)")
    lab = _as_labels(labels)
    if like is not None and lab.shape != like.spatial_shape:
        raise ValueError(f"labels shape {lab.shape} does not match the image's spatial shape "
                         f"{like.spatial_shape}; labels must cover the image voxel for voxel")
    spacing = like.spacing if like is not None else (1.0,) * lab.ndim
    data = ImageData(lab, spacing, like.affine if like is not None else None,
                     dict(like.meta) if like is not None else {})
    data.meta["rgb"] = False
    written = _write(p, kind, data, overwrite, labels=True)
    if classes is not None and len(classes) > 1:
        write_class_names(written.parent, classes)
    return written


def write_class_names(folder: str | os.PathLike, classes: Sequence[str]) -> Path | None:
    """``labels.json`` (``{"1": "liver", ...}``; ``classes`` background first) in ``folder``, which the
    readers and the training data loader take class names from. An existing file with other names is left
    as it is (a warning says so): one folder holds one set of classes. Returns the file, or None when left."""
    import json
    import warnings

    target = Path(folder) / "labels.json"
    names = {str(i): str(c) for i, c in enumerate(classes) if i > 0}
    if target.is_file():
        try:
            same = json.loads(target.read_text()) == names
        except ValueError:
            same = False
        if not same:
            warnings.warn(f"{target} names other classes; left as it is (save label maps of other classes in "
                          "another folder)", stacklevel=2)
            return None
        return target
    target.write_text(json.dumps(names, indent=1) + "\n")
    return target


def write_image(path: str | os.PathLike, data: ImageData, *, overwrite: bool = False) -> Path:
    """Write an image to .nii/.nii.gz (spatial data, dtype kept), .tif/.tiff or .png (2D uint8/uint16). Atomic."""
    p = Path(path).expanduser()
    kind = _kind(p)
    if kind not in (_NIFTI, _RASTER, _TIFF) or p.name.lower().endswith(_READ_ONLY):
        raise ValueError(f"{p}: cannot write images as {_suffix(p) or '(no extension)'!r}; "
                         "use .nii.gz, .nii, .tif/.tiff or .png")
    return _write(p, kind, data, overwrite, labels=False)


def _write(p: Path, kind: str, data: ImageData, overwrite: bool, labels: bool) -> Path:
    arr = np.asarray(data.array)
    if kind == _RASTER:
        if len(data.spacing) != 2:
            raise ValueError(f"{p}: PNG holds 2D images only, got shape {arr.shape}; use .tif or .nii.gz for volumes")
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        if arr.dtype not in (np.uint8, np.uint16) or (arr.dtype == np.uint16 and data.rgb):
            raise ValueError(f"{p}: PNG stores uint8 (gray/RGB) or uint16 (gray) values, got {arr.dtype}; "
                             "use .tif or .nii.gz to keep these values exactly")
        return _atomic_write(p, lambda tmp: _write_png(tmp, arr), overwrite)
    if kind == _TIFF:
        return _atomic_write(p, lambda tmp: _write_tiff(tmp, arr, data), overwrite)
    if data.rgb:
        raise ValueError(f"{p}: NIfTI output supports single-channel images; save colour images as .png or .tif")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    return _atomic_write(p, lambda tmp: _write_nifti(tmp, arr, data, labels), overwrite)


def _write_png(tmp: Path, arr: np.ndarray) -> None:
    import imageio.v3 as iio

    iio.imwrite(tmp, arr, extension=".png")


def _write_tiff(tmp: Path, arr: np.ndarray, data: ImageData) -> None:
    import tifffile

    axes = "ZYX"[-len(data.spacing):] if len(data.spacing) <= 3 else "Q" * (len(data.spacing) - 2) + "YX"
    tifffile.imwrite(tmp, arr, photometric="rgb" if data.rgb else "minisblack", compression="zlib",
                     metadata={"axes": axes + ("S" if data.rgb else ""), "spacing": list(data.spacing)})


def _write_nifti(tmp: Path, arr: np.ndarray, data: ImageData, labels: bool) -> None:
    import nibabel as nib

    meta = data.meta if data.meta.get("format") == "nifti" else {}
    file_arr = arr.transpose(tuple(reversed(range(arr.ndim))))
    affine = data.affine
    if affine is None:
        zooms = list(reversed(data.spacing))[:3]
        affine = np.diag(zooms + [1.0] * (4 - len(zooms)))
    img = nib.Nifti1Image(file_arr, affine)
    hdr = img.header
    hdr.set_data_dtype(file_arr.dtype)
    hdr.set_xyzt_units("mm")
    qcode, scode = int(meta.get("qform_code", 0)), int(meta.get("sform_code", 0))
    if scode == 0 and qcode > 0 and "qform_params" in meta:  # restore the source's qform parameters exactly
        img.set_sform(None, code=0)
        img.set_qform(affine, code=qcode)
        params = dict(meta["qform_params"])
        pixdim = params.pop("pixdim")
        for key, val in params.items():
            hdr[key] = val
        hdr["pixdim"][: len(pixdim)] = pixdim
        if not np.array_equal(hdr.get_best_affine(), affine):  # affine was changed: store it as given
            img.set_sform(affine, code=2)
    else:
        img.set_sform(affine, code=scode or 2)
        img.set_qform(affine, code=qcode)
    if labels:
        hdr["intent_code"] = 1002  # NIFTI_INTENT_LABEL
    with open(tmp, "wb") as fh:
        target = gzip.GzipFile(filename="", mode="wb", fileobj=fh, compresslevel=GZIP_LEVEL, mtime=0) \
            if tmp.name.lower().endswith(".gz") else fh
        try:
            img.to_file_map(nib.Nifti1Image.make_file_map({"image": target, "header": target}))
        finally:
            if target is not fh:
                target.close()
