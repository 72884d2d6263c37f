"""Training data: folder layouts, NIfTI pairs, in-memory pairs, caching, splits."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from _factories import disk_image
from llm4seg.preprocess import Preprocessing, intensity_range, resize_labels, to_model_input
from llm4seg.train.data import NothingToLearn, from_arrays, load_dataset, split
from llm4seg.train.sources import find_sources, parse_classes


def write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_folder(root: Path, n: int = 6, size: int = 40, classes: int = 1) -> Path:
    """The paper's layout: images/<name>.png + masks/<k>/<name>.png with {0, 255} masks."""
    for i in range(n):
        img, mask = disk_image(size, size, seed=i)
        write_png(root / "images" / f"case{i}.png", img)
        for k in range(classes):
            m = mask.copy()
            if k:  # a second class: the left half of the disk
                m[:, size // 2:] = 0
            write_png(root / "masks" / str(k) / f"case{i}.png", (m * 255).astype(np.uint8))
    return root


def write_nifti(path: Path, zyx: np.ndarray, spacing=(0.8, 0.8, 2.0)) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(np.ascontiguousarray(zyx.T), np.diag([*spacing, 1.0]))
    nib.save(img, str(path))


def make_volume(root: Path, z: int = 6, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    vol = rng.normal(-800, 30, (z, size, size)).astype(np.int16)
    labels = np.zeros((z, size, size), np.uint8)
    labels[2:4, 8:20, 8:20] = 1   # "liver" on slices 2-3
    labels[3, 10:14, 10:14] = 2   # "tumour" on slice 3
    vol[labels > 0] = 60
    root.mkdir(parents=True, exist_ok=True)
    write_nifti(root / "ct.nii.gz", vol)
    write_nifti(root / "labels.nii.gz", labels)
    (root / "labels.json").write_text('{"0": "background", "1": "liver", "2": "tumour"}')
    return vol, labels


def test_folder_layout_binary_masks(tmp_path):
    root = make_folder(tmp_path / "d")
    prep = Preprocessing(size=32)
    ds = load_dataset(root, prep)
    assert len(ds) == 6 and ds.class_names == ["background", "foreground"]
    assert ds.images.dtype == torch.float16 and ds.images.shape == (6, 1, 32, 32)
    assert ds.labels.dtype == torch.uint8 and set(ds.labels.unique().tolist()) == {0, 1}
    # exactly what the segmentation path feeds the model (same preprocessing code)
    img, mask = disk_image(40, 40, seed=0)
    lo, hi = intensity_range(img[None], prep)
    expected = to_model_input(img[None], prep, lo, hi)
    i = ds.names.index("case0")
    assert torch.allclose(ds.images[i].float(), expected[0], atol=2e-3)
    assert torch.equal(ds.labels[i], resize_labels(torch.from_numpy(mask[None]), 32)[0])


def test_folder_list_file_and_multiclass_masks(tmp_path):
    root = make_folder(tmp_path / "d", n=4, classes=2)
    (root / "d_train.txt").write_text("case1\ncase3\n")
    ds = load_dataset(root, Preprocessing(size=32))
    assert sorted(ds.source_names) == ["case1", "case3"]
    assert ds.num_classes == 2 and set(ds.labels.unique().tolist()) == {0, 1, 2}
    with pytest.raises(FileNotFoundError, match="no image for 1 listed"):
        load_dataset(root, Preprocessing(size=32), list_file=_write(tmp_path / "l.txt", "nope\n"))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_integer_label_images(tmp_path):
    root = tmp_path / "d"
    for i in range(2):
        img, mask = disk_image(32, 32, seed=i)
        lab = mask.astype(np.uint8)
        lab[:4, :4] = 3
        write_png(root / "images" / f"a{i}.png", img)
        write_png(root / "labels" / f"a{i}.png", lab)
    sources, names = find_sources(root)
    assert names == ["background", "class 1", "class 3"]
    ds = load_dataset(root, Preprocessing(size=32), classes=["disk=1", "corner=3"])
    assert ds.class_names == ["background", "disk", "corner"]
    assert set(ds.labels.unique().tolist()) == {0, 1, 2}


def test_bmp_pairs_with_suffixed_mask_names_are_found_like_png(tmp_path):
    import imageio.v3 as iio

    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(2):
        img, mask = disk_image(32, 32, seed=i)
        iio.imwrite(root / "images" / f"IMD{i}.bmp", img)
        iio.imwrite(root / "masks" / f"IMD{i}_lesion.bmp", (mask * 255).astype(np.uint8))  # PH2's names
    sources, names = find_sources(root)
    assert [s.name for s in sources] == ["IMD0", "IMD1"] and names == ["background", "foreground"]
    image, labels = sources[0].load()
    assert image.shape[:2] == labels.shape == (32, 32) and set(np.unique(labels)) == {0, 1}


def test_nifti_pairs_classes_window_and_slice_selection(tmp_path):
    vol, labels = make_volume(tmp_path / "ct")
    prep = Preprocessing(size=32, window=(40, 400))
    ds = load_dataset(tmp_path / "ct", prep, classes=["liver=1+2"])
    assert len(ds) == 6 and ds.class_names == ["background", "liver"]
    assert torch.equal(ds.labels, torch.from_numpy((labels > 0).astype(np.uint8)))  # (Z, Y, X) order kept
    lo, hi = intensity_range(vol, prep)
    assert torch.allclose(ds.images[3].float(), to_model_input(vol[3:4], prep, lo, hi)[0], atol=2e-3)
    only = load_dataset(tmp_path / "ct", prep, classes=["liver"], only_labelled=True)
    assert only.names == ["ct:z2", "ct:z3"]
    window = load_dataset(tmp_path / "ct", prep, classes=["tumour"], z_range=(3, 5))
    assert window.names == ["ct:z3", "ct:z4"]
    past_the_end = load_dataset(tmp_path / "ct", prep, classes=["tumour"], z_range=(4, 72))  # clipped to the volume
    assert past_the_end.names == ["ct:z4", "ct:z5"]
    both = load_dataset(tmp_path / "ct", prep)
    assert both.class_names == ["background", "liver", "tumour"] and int(both.labels.max()) == 2
    with pytest.raises(ValueError, match="unknown class 'spleen'"):
        load_dataset(tmp_path / "ct", prep, classes=["spleen"])


def test_in_memory_pairs_use_only_labelled_slices():
    img2d, mask2d = disk_image(48, 40)
    vol = np.stack([disk_image(48, 40, seed=i)[0] for i in range(5)])
    vlab = np.zeros(vol.shape, np.uint8)
    vlab[1] = disk_image(48, 40, seed=1)[1]
    vlab[4, :3, :3] = 1
    before = vlab.copy()
    ds = from_arrays([(img2d, mask2d), (vol, vlab)], Preprocessing(size=32), names=["img", "vol"])
    assert ds.names == ["img", "vol:z1", "vol:z4"]
    assert np.array_equal(vlab, before)  # the user's labels are never modified
    assert ds.pixel_counts()["foreground"] > 0
    with pytest.raises(NothingToLearn, match="label at least one slice"):
        from_arrays([(vol, np.zeros(vol.shape, np.uint8))], Preprocessing(size=32))


def test_label_values_beyond_the_classes_are_refused():
    img, mask = disk_image(32, 32)
    with pytest.raises(ValueError, match="label value 2"):
        from_arrays([(img, mask * 2)], Preprocessing(size=32), class_names=["background", "x"])


def test_split_by_fraction_seed_and_names(tmp_path):
    pairs = [disk_image(32, 32, seed=i) for i in range(10)]
    ds = from_arrays(pairs, Preprocessing(size=32), names=[f"p{i}" for i in range(10)])
    tr, va = split(ds, 0.2, seed=1)
    tr2, va2 = split(ds, 0.2, seed=1)
    assert len(va) == 2 and len(tr) == 8 and va.names == va2.names
    assert set(tr.names).isdisjoint(va.names)
    tr, va = split(ds, val_names=["p3", "p7"])
    assert va.names == ["p3", "p7"] and len(tr) == 8
    one_tr, one_va = split(ds.subset([0, 1]), 0.01)
    assert len(one_va) == 1 and len(one_tr) == 1  # at least one validation item when possible
    assert split(ds.subset([0]), 0.5)[1] is None
    with pytest.raises(ValueError, match="--val-list"):
        split(ds, val_names=["zzz"])


def test_parse_classes():
    spec = parse_classes(["liver=1+2", "3", "bone"], {1: "liver", 3: "portal vein", 6: "bone"})
    assert spec.names == ["liver", "portal vein", "bone"]
    assert spec.apply(np.array([0, 1, 2, 3, 4, 6])).tolist() == [0, 1, 1, 2, 0, 3]
