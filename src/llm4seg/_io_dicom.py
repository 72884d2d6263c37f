"""DICOM series reading for :mod:`llm4seg.io` (pydicom).

A series is read from a folder of ``.dcm`` or extension-less DICOM files (not recursive). Files are grouped
by SeriesInstanceUID; slices are sorted by ImagePositionPatient projected on the slice normal (fallback
InstanceNumber); RescaleSlope/Intercept are applied (Hounsfield units for CT).

Affine convention: the 4x4 matrix maps voxel indices ``(i, j, k)`` = (column, row, slice), i.e. the array
axes ``(Z, Y, X)`` reversed, to world millimetres in RAS+ (DICOM's LPS with x and y negated), matching what
nibabel reports for the same series converted to NIfTI. Patient-identifying tags are never copied into meta.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from llm4seg.imagedata import SUPPORTED_FORMATS, ImageData

__all__ = ["is_dicom_file", "looks_like_dicom_folder", "read_dicom"]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def is_dicom_file(path: Path) -> bool:
    """True when ``path`` is a regular file with the DICOM preamble ('DICM' at byte 128)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def looks_like_dicom_folder(folder: Path, probe: int = 16) -> bool:
    """Cheap check: one of the first ``probe`` files in ``folder`` is DICOM (by preamble or .dcm suffix)."""
    try:
        files = [f for f in sorted(Path(folder).iterdir()) if f.is_file() and not f.name.startswith(".")]
    except OSError:
        return False
    return any(f.suffix.lower() == ".dcm" or is_dicom_file(f) for f in files[:probe])


def _floats(value: Any, n: int) -> np.ndarray | None:
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) and np.all(np.isfinite(out)) else None


def _scan(folder: Path) -> tuple[list[tuple[Path, Any]], list[Path]]:
    import pydicom

    headers, skipped = [], []
    for f in sorted(folder.iterdir()):
        if not f.is_file() or f.name.startswith(".") or f.name.upper() == "DICOMDIR":
            continue
        is_dcm = f.suffix.lower() == ".dcm"
        if not (is_dcm or is_dicom_file(f)):
            continue
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=is_dcm)
        except Exception:
            skipped.append(f)
            continue
        if "Rows" in ds and "Columns" in ds:
            headers.append((f, ds))
    return headers, skipped


def read_dicom(path: Path) -> ImageData:
    """Read the DICOM series in folder ``path`` (or the series that the file ``path`` belongs to)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    headers, skipped = _scan(folder)
    if not headers:
        raise ValueError(f"{folder}: no DICOM image files found (looked for files with a DICOM header or a .dcm "
                         f"extension); point to the folder that holds the slices of one series. "
                         f"Supported formats: {SUPPORTED_FORMATS}")
    groups: dict[str, list[tuple[Path, Any]]] = {}
    for f, ds in headers:
        groups.setdefault(str(ds.get("SeriesInstanceUID", "unknown")), []).append((f, ds))
    if path.is_file():
        uid = next((u for u, items in groups.items() if any(f == path for f, _ in items)), None)
        if uid is None:
            raise ValueError(f"{path}: not a readable DICOM image file")
        chosen = uid
    else:
        chosen = max(groups, key=lambda u: len(groups[u]))
        if len(groups) > 1:
            others = "; ".join(f"{u} ({_desc(groups[u][0][1])}, {len(groups[u])} files)"
                               for u in groups if u != chosen)
            warnings.warn(f"{folder} holds {len(groups)} DICOM series; reading the largest, {chosen} "
                          f"({_desc(groups[chosen][0][1])}, {len(groups[chosen])} files). Ignored: {others}. "
                          "Put each series in its own folder to read another one.", stacklevel=3)
    if skipped:
        warnings.warn(f"{folder}: skipped {len(skipped)} unreadable DICOM file(s), e.g. {skipped[0].name}",
                      stacklevel=3)
    items = groups[chosen]
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for _, ds in items):
        raise ValueError(f"{folder}: multi-frame (enhanced) DICOM is not supported; convert the series to NIfTI "
                         "(e.g. with dcm2niix) and open the .nii.gz")
    items, spacing_z, geometry = _sort(folder, items)
    first = items[0][1]
    shape = (int(first.Rows), int(first.Columns))
    slices, slopes, inters = [], [], []
    for f, _ in items:
        full = _load(f)
        pix = np.asarray(full.pixel_array)
        if pix.shape[:2] != shape:
            raise ValueError(f"{f}: slice size {pix.shape[:2]} differs from the series' {shape}; "
                             "the folder mixes images of different sizes")
        slices.append(pix)
        slopes.append(float(full.get("RescaleSlope", 1) or 1))
        inters.append(float(full.get("RescaleIntercept", 0) or 0))
    raw = np.stack(slices)
    arr = _apply_rescale(raw, slopes, inters)
    ps = _floats(first.get("PixelSpacing") or first.get("ImagerPixelSpacing") or [], 2)
    dy, dx = (float(ps[0]), float(ps[1])) if ps is not None and np.all(ps > 0) else (1.0, 1.0)
    affine = None
    if geometry is not None:
        row, col, normal, origin = geometry
        lps = np.eye(4)
        lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row * dx, col * dy, normal * spacing_z, origin
        affine = _LPS_TO_RAS @ lps
    rgb = raw.ndim == 4
    meta: dict[str, Any] = {
        "format": "dicom", "source": str(folder), "rgb": rgb, "axes": "ZYX", "affine_space": "RAS",
        "series_uid": chosen, "series_description": str(first.get("SeriesDescription", "")),
        "modality": str(first.get("Modality", "")), "n_slices": len(items),
        "rescale_slope": slopes[0] if len(set(slopes)) == 1 else None,
        "rescale_intercept": inters[0] if len(set(inters)) == 1 else None,
        "window": _window(first), "photometric": str(first.get("PhotometricInterpretation", "")),
    }
    return ImageData(arr, (spacing_z, dy, dx), affine, meta)


def _desc(ds: Any) -> str:
    return f"{ds.get('Modality', '?')} '{ds.get('SeriesDescription', '')}'"


def _load(f: Path) -> Any:
    import pydicom

    ds = None
    try:
        ds = pydicom.dcmread(f, force=f.suffix.lower() == ".dcm")
        _ = ds.pixel_array
        return ds
    except Exception as err:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
        raise ValueError(f"{f}: cannot decode the DICOM pixel data (transfer syntax {syntax}: {err}); compressed "
                         "series need pylibjpeg or python-gdcm installed") from err


def _window(ds: Any) -> list[float] | None:
    c, w = ds.get("WindowCenter"), ds.get("WindowWidth")
    try:
        c = float(c[0] if hasattr(c, "__len__") and not isinstance(c, str) else c)
        w = float(w[0] if hasattr(w, "__len__") and not isinstance(w, str) else w)
        return [c, w]
    except (TypeError, ValueError, IndexError):
        return None


def _sort(folder: Path, items: list) -> tuple[list, float, tuple | None]:
    """Order slices along the normal; return (items, slice spacing, (row, col, normal, origin) or None)."""
    first = items[0][1]
    inst = [int(ds.get("InstanceNumber", 0) or 0) for _, ds in items]
    iop = _floats(first.get("ImageOrientationPatient") or [], 6)
    ipps = [_floats(ds.get("ImagePositionPatient") or [], 3) for _, ds in items]
    thickness = float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0) or 1.0
    if iop is None or any(p is None for p in ipps):
        order = sorted(range(len(items)), key=lambda i: inst[i])
        if len(items) > 1:
            warnings.warn(f"{folder}: slices lack ImagePositionPatient/ImageOrientationPatient; sorted by "
                          f"InstanceNumber with slice spacing {thickness:g} mm from the header", stacklevel=4)
        return [items[i] for i in order], abs(thickness), None
    row, col = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    normal = np.cross(row, col)
    dist = np.array([float(np.dot(p, normal)) for p in ipps])
    order = sorted(range(len(items)), key=lambda i: (dist[i], inst[i]))
    items = [items[i] for i in order]
    d = dist[order]
    spacing = abs(thickness)
    if len(items) > 1:
        diffs = np.diff(d)
        unique = np.count_nonzero(diffs > 1e-3) + 1
        if unique < len(items):
            warnings.warn(f"{folder}: {len(items)} slices at only {unique} distinct positions (several phases or "
                          "echoes in one series?); they are stacked in position/instance order", stacklevel=4)
        steps = diffs[diffs > 1e-3]
        if steps.size:
            spacing = float(np.median(steps))
            uneven = np.abs(steps - spacing) > max(0.1 * spacing, 1e-3)
            if uneven.any():
                missing = int(np.sum(np.maximum(np.round(steps / spacing) - 1, 0)))
                gaps = ", ".join(f"{g:.3g}" for g in sorted(set(np.round(steps[uneven], 3)))[:5])
                warnings.warn(f"{folder}: uneven slice spacing (usual step {spacing:.4g} mm, also {gaps} mm); about "
                              f"{missing} slice(s) seem to be missing. The volume is stacked as is, so distances "
                              "along z are wrong across the gaps", stacklevel=4)
    return items, spacing, (row, col, normal, ipps[order[0]])


def _apply_rescale(raw: np.ndarray, slopes: list[float], inters: list[float]) -> np.ndarray:
    """Apply per-slice RescaleSlope/Intercept; int16 when integral and in range, else int32/float32."""
    if all(s == 1 for s in slopes) and all(i == 0 for i in inters):
        return raw
    s = np.asarray(slopes).reshape((-1,) + (1,) * (raw.ndim - 1))
    i = np.asarray(inters).reshape(s.shape)
    if np.issubdtype(raw.dtype, np.integer) and all(v.is_integer() for v in slopes + inters):
        out = raw.astype(np.int64) * s.astype(np.int64) + i.astype(np.int64)
        lo, hi = (int(out.min()), int(out.max())) if out.size else (0, 0)
        for dt in (np.int16, np.int32):
            if np.iinfo(dt).min <= lo and hi <= np.iinfo(dt).max:
                return out.astype(dt)
    return (raw.astype(np.float32) * s.astype(np.float32) + i.astype(np.float32)).astype(np.float32)
