"""Where training pairs come from: image folders, NIfTI volume/label pairs, in-memory arrays.

A :class:`Source` is one image (2D) or one volume with its integer label map (0 = background,
1..K = classes). It loads lazily, so a dataset can be listed cheaply and decoded once when cached.

Folder layouts understood by :func:`find_sources`:

* ``images/<name>.<png|jpg|bmp|tif>`` + ``masks/0/<name>.png`` (the paper's layout; binary masks
  {0, 255} or {0, 1} → {0, 1}); ``masks/<k>/`` for several classes (class k+1; later classes win
  where masks overlap); ``masks/<name>.png`` for one class (the Kvasir-SEG layout); or ``labels/<name>.png``
  holding integer label images. Mask names may carry a suffix (``<name>_segmentation.png``, ``_lesion``,
  ``_mask``, …: LABEL_SUFFIXES). An optional list file
  (``<dir>/*_train.txt``/``list.txt`` or ``list_file=``) restricts the names, one per line.
* NIfTI: ``images/<name>.nii.gz`` + ``labels/<name>.nii.gz`` (or ``masks/``), or files side by side
  where the label file is ``labels.nii.gz`` (next to one image) or ``<stem>_label(s)|_seg|_mask.nii.gz``.
  ``labels.json`` (``{"1": "liver", ...}``) names the classes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..io import NIFTI_EXTS, RASTER_EXTS, TIFF_EXTS

__all__ = ["Source", "ClassSpec", "find_sources", "sources_from_arrays", "parse_classes", "read_array"]

IMAGE_EXTS = RASTER_EXTS + TIFF_EXTS
LABEL_SUFFIXES = ("_labels", "_label", "_seg", "_mask", "_segmentation", "_lesion", "_gt")


@dataclass
class Source:
    """One training image or volume. ``load()`` returns ``(image, labels)``; labels are integer maps.

    ``volume``: image is (Z, Y, X); ``slices`` the z indices to use (None = all); ``only_labelled``
    keeps just the slices whose labels are not all background.
    """

    name: str
    loader: Callable[[], tuple]
    volume: bool = False
    slices: Sequence[int] | None = None
    only_labelled: bool = False
    spacing: tuple[float, ...] | None = None

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """``(image, labels)``; sets ``spacing`` (spatial axes, napari order) when the file has one."""
        loaded = self.loader()
        image, labels = loaded[0], loaded[1]
        if len(loaded) > 2 and loaded[2] is not None:
            self.spacing = tuple(float(v) for v in loaded[2])
        spatial = image.shape[:3] if self.volume else image.shape[:2]
        if tuple(labels.shape) != tuple(spatial):
            raise ValueError(
                f"{self.name}: labels of shape {labels.shape} do not match the image's spatial shape {spatial}"
            )
        return image, labels

    def slice_indices(self, labels: np.ndarray) -> list[int]:
        """The z indices used for training (volumes), after ``slices`` and ``only_labelled``."""
        if not self.volume:
            return [0]
        depth = labels.shape[0]
        zs = list(range(depth)) if self.slices is None else [int(z) for z in self.slices if 0 <= int(z) < depth]
        if self.only_labelled:
            zs = [z for z in zs if labels[z].any()]
        return zs


@dataclass
class ClassSpec:
    """Which raw label values form which training class: ``groups[i]`` → class i+1 named ``names[i]``."""

    names: list[str]
    groups: list[list[int]]

    def lut(self, max_value: int) -> np.ndarray:
        lut = np.zeros(max(max_value, max(v for g in self.groups for v in g)) + 1, dtype=np.uint8)
        for i, group in enumerate(self.groups):
            lut[group] = i + 1
        return lut

    def apply(self, labels: np.ndarray) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.dtype.kind == "f":
            labels = np.rint(labels)
        labels = labels.astype(np.int64, copy=False)
        if labels.size and labels.min() < 0:
            raise ValueError("label maps must not hold negative values")
        return self.lut(int(labels.max()) if labels.size else 0)[labels]


def parse_classes(spec: Sequence[str] | None, known: dict[int, str]) -> ClassSpec:
    """Build a :class:`ClassSpec` from CLI-style entries and the dataset's known classes.

    Entries: ``liver`` (a known name), ``1`` (a label value), ``liver=1+2`` (a name for several values).
    ``None``/empty: every known class, in value order.
    """
    if not spec:
        if not known:
            raise ValueError("the dataset names no classes; pass them, e.g. --classes 1 or --classes liver=1")
        values = sorted(known)
        return ClassSpec([known[v] for v in values], [[v] for v in values])
    by_name = {n.lower(): v for v, n in known.items()}
    names, groups = [], []
    for entry in spec:
        name, _, values = entry.partition("=")
        name = name.strip()
        if values:
            try:
                group = [int(v) for v in values.split("+")]
            except ValueError:
                raise ValueError(f"class {entry!r}: values after '=' must be integers joined by '+', e.g. liver=1+2") from None
        elif name.isdigit():
            group, name = [int(name)], known.get(int(name), f"class {name}")
        elif name.lower() in by_name:
            group = [by_name[name.lower()]]
        else:
            raise ValueError(
                f"unknown class {name!r}: known classes are {', '.join(f'{v}={n}' for v, n in sorted(known.items())) or 'none'}; "
                "use NAME=VALUE to name a label value"
            )
        if any(v <= 0 for v in group):
            raise ValueError(f"class {entry!r}: label values must be >= 1 (0 is background)")
        names.append(name)
        groups.append(group)
    return ClassSpec(names, groups)


def read_array(path: Path) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """Pixel array (napari axis order) and spacing of an image file, via ``llm4seg.io``."""
    try:
        from ..io import read_image
    except ImportError:  # pragma: no cover - io is part of the package; kept for partial installs
        return _read_fallback(path)
    data = read_image(path)
    return np.asarray(data.array), tuple(data.spacing) if data.spacing is not None else None


def _read_fallback(path: Path) -> tuple[np.ndarray, tuple[float, ...] | None]:
    if path.name.lower().endswith(NIFTI_EXTS):
        import nibabel as nib

        img = nib.load(str(path))
        arr = np.asanyarray(img.dataobj)
        zooms = tuple(float(z) for z in img.header.get_zooms()[: arr.ndim])
        return arr.T, zooms[::-1]  # (x, y, z) -> (z, y, x)
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im), None


def _strip_ext(name: str) -> str:
    low = name.lower()
    for ext in NIFTI_EXTS + IMAGE_EXTS:
        if low.endswith(ext):
            return name[: -len(ext)]
    return name


def _files(folder: Path, exts: Sequence[str]) -> dict[str, Path]:
    return {_strip_ext(p.name): p for p in sorted(folder.iterdir()) if p.is_file() and p.name.lower().endswith(tuple(exts))}


def _mask_files(folder: Path) -> dict[str, Path]:
    """Mask or label images of ``folder`` by the image name they belong to: ``<name>.png`` or, as ISIC, PH2 and
    BUSI name them, ``<name>_segmentation.png``, ``<name>_lesion.bmp``, ``<name>_mask.png`` (see LABEL_SUFFIXES)."""
    files = _files(folder, IMAGE_EXTS)
    out = dict(files)
    for stem, path in files.items():
        suffix = next((x for x in LABEL_SUFFIXES if stem.lower().endswith(x)), None)
        if suffix is not None:
            out.setdefault(stem[: -len(suffix)], path)
    return out


def _binary(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask.max(-1)
    top = mask.max() if mask.size else 0
    return mask > (top / 2 if top > 1 else 0)


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"list file {path} not found")
    return [_strip_ext(line.strip()) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def known_classes(root: Path) -> dict[int, str]:
    """Class names by label value from ``root/labels.json`` (empty when there is none)."""
    path = root / "labels.json"
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {int(k): str(v) for k, v in raw.items() if int(k) > 0}
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"{path}: expected a JSON object like {{\"1\": \"liver\"}} ({exc})") from None


def find_sources(
    root: str | Path,
    *,
    list_file: str | Path | None = None,
    classes: Sequence[str] | None = None,
    only_labelled: bool = False,
    z_range: tuple[int, int] | None = None,
) -> tuple[list[Source], list[str]]:
    """Discover the training pairs under ``root``; return them and the class names (background first)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    images_dir = root / "images"
    if images_dir.is_dir() and any(_files(images_dir, NIFTI_EXTS)):
        label_dir = next((root / d for d in ("labels", "masks") if (root / d).is_dir()), None)
        if label_dir is None:
            raise FileNotFoundError(f"{root}: NIfTI images found in images/, but no labels/ (or masks/) folder")
        images, labels = _files(images_dir, NIFTI_EXTS), _files(label_dir, NIFTI_EXTS)
        pairs = [(n, images[n], labels[n]) for n in images if n in labels]
        return _nifti_sources(root, pairs, classes, only_labelled, z_range)
    if images_dir.is_dir():
        return _folder_sources(root, list_file, classes)
    niftis = _files(root, NIFTI_EXTS)
    if niftis:
        pairs = _pair_side_by_side(root, niftis)
        return _nifti_sources(root, pairs, classes, only_labelled, z_range)
    raise FileNotFoundError(
        f"{root}: no training data found: expected images/ + masks/ (binary masks, or masks/0/, masks/1/ per "
        "class), images/ + labels/ (label images or NIfTI), "
        "or NIfTI files with labels next to them (e.g. ct.nii.gz + labels.nii.gz)"
    )


def _pair_side_by_side(root: Path, niftis: dict[str, Path]) -> list[tuple[str, Path, Path]]:
    label_stems = {s for s in niftis if s.lower() in ("labels", "label", "seg", "mask")
                   or s.lower().endswith(LABEL_SUFFIXES)}
    images = [s for s in niftis if s not in label_stems]
    pairs = []
    for stem in images:
        match = [stem + suffix for suffix in LABEL_SUFFIXES if stem + suffix in niftis]
        if not match and len(images) == 1:
            match = [s for s in ("labels", "label", "seg", "mask") if s in niftis]
        if match:
            pairs.append((stem, niftis[stem], niftis[match[0]]))
    if not pairs:
        raise FileNotFoundError(
            f"{root}: NIfTI files found but no image/label pairs: name labels <image>_labels.nii.gz, "
            "or labels.nii.gz next to a single image"
        )
    return pairs


def _nifti_sources(root: Path, pairs, classes, only_labelled, z_range) -> tuple[list[Source], list[str]]:
    known = known_classes(root)
    if not known:
        values: set[int] = set()
        for _, _, lab in pairs:
            arr, _ = read_array(lab)
            values.update(int(v) for v in np.unique(arr) if v > 0)
        known = {v: f"class {v}" for v in sorted(values)}
    spec = parse_classes(classes, known)
    sources = []
    for name, img_path, lab_path in pairs:
        def loader(i=img_path, l=lab_path):
            image, spacing = read_array(i)
            labels, _ = read_array(l)
            return image, spec.apply(labels), spacing

        slices = None if z_range is None else range(*z_range)
        sources.append(Source(name, loader, volume=True, slices=slices, only_labelled=only_labelled))
    return sources, ["background"] + spec.names


def _folder_sources(root: Path, list_file, classes) -> tuple[list[Source], list[str]]:
    images = _files(root / "images", IMAGE_EXTS)
    if list_file is None:
        found = sorted(root.glob("*_train.txt")) + sorted(root.glob("list.txt"))
        list_file = found[0] if len(found) == 1 else None
    names = _read_list(Path(list_file)) if list_file is not None else sorted(images)
    missing = [n for n in names if n not in images]
    if missing:
        raise FileNotFoundError(f"{root}/images has no image for {len(missing)} listed name(s), e.g. {missing[0]!r}")
    labels_dir, masks_dir = root / "labels", root / "masks"
    if labels_dir.is_dir():
        label_files = _mask_files(labels_dir)
        values: set[int] = set()
        for n in names[:50]:
            if n in label_files:
                values.update(int(v) for v in np.unique(read_array(label_files[n])[0]) if v > 0)
        known = known_classes(root) or {v: f"class {v}" for v in sorted(values)}
        spec = parse_classes(classes, known)

        def make(n: str) -> Callable[[], tuple]:
            def load() -> tuple:
                image, spacing = read_array(images[n])
                return image, spec.apply(read_array(label_files[n])[0]), spacing
            return load

        have = [n for n in names if n in label_files]
        class_names = spec.names
    elif masks_dir.is_dir():
        ks = sorted((d for d in masks_dir.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name))
        if not ks and _files(masks_dir, IMAGE_EXTS):
            ks = [masks_dir]  # masks/<name>.png: one class of binary masks (the Kvasir-SEG layout)
        if not ks:
            raise FileNotFoundError(f"{masks_dir} has no masks: put binary masks in masks/<name>.png, or one "
                                    "folder per class in masks/0/<name>.png, masks/1/<name>.png, ...")
        mask_files = [_mask_files(d) for d in ks]
        known = known_classes(root) or ({1: "foreground"} if len(ks) == 1 else
                                        {int(d.name) + 1: f"class {int(d.name) + 1}" for d in ks})
        spec = parse_classes(classes, known)

        def make(n: str) -> Callable[[], tuple]:
            def load() -> tuple:
                image, spacing = read_array(images[n])
                raw = np.zeros(image.shape[:2], dtype=np.uint8)
                for k, files in enumerate(mask_files):
                    if n in files:
                        mask = _binary(read_array(files[n])[0])
                        if mask.shape != raw.shape:
                            raise ValueError(f"{files[n]}: mask shape {mask.shape} differs from the image's {raw.shape}")
                        raw[mask] = k + 1
                return image, spec.apply(raw), spacing
            return load

        have = [n for n in names if any(n in files for files in mask_files)]
        class_names = spec.names
    else:
        raise FileNotFoundError(f"{root}: images/ found but no masks/ (binary masks) or labels/ (label images)")
    if not have:
        raise FileNotFoundError(f"{root}: no image has a mask with the same name")
    return [Source(n, make(n)) for n in have], ["background"] + class_names


def sources_from_arrays(
    pairs: Sequence[tuple[Any, Any]],
    *,
    names: Sequence[str] | None = None,
    only_labelled: bool = True,
    z_range: tuple[int, int] | None = None,
) -> list[Source]:
    """Sources from in-memory (image, labels) pairs, as the fine-tune widget passes them.

    ``labels`` decides the layout: 2D labels (H, W) → a 2D image (H, W) or (H, W, C); 3D labels
    (Z, H, W) → a volume (Z, H, W) of which only labelled slices are used (``only_labelled``) within
    ``z_range``. Label values are used as they are (0 = background). Arrays are not copied or modified.
    """
    out = []
    for i, (image, labels) in enumerate(pairs):
        image, labels = np.asarray(image), np.asarray(labels)
        if labels.dtype.kind not in "uib":
            raise ValueError(f"pair {i}: labels must be integers, got {labels.dtype}")
        volume = labels.ndim == 3
        name = names[i] if names is not None else f"pair{i}"
        slices = range(*z_range) if (volume and z_range is not None) else None
        out.append(Source(name, lambda im=image, lb=labels: (im, lb), volume=volume, slices=slices,
                          only_labelled=only_labelled and volume))
    return out

