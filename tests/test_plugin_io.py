"""napari plugin: manifest, discovery, readers, writers and sample data (pytest-qt + make_napari_viewer)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytestmark = pytest.mark.gui  # napari plugin discovery, readers and writers in a real viewer
import npe2  # noqa: E402

from llm4seg.io import read_image  # noqa: E402
from napari_llm4seg._reader import get_reader  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "napari-llm4seg"


def _npe2_bin() -> str:
    exe = Path(sys.executable).with_name("npe2")
    return str(exe) if exe.exists() else "npe2"


# --------------------------------------------------------------------------------------------- manifest
def test_package_manifest_is_the_root_manifest() -> None:
    pkg = ROOT / "napari_llm4seg" / "napari.yaml"
    assert pkg.read_bytes() == (ROOT / "napari.yaml").read_bytes()
    spec = importlib.util.find_spec("napari_llm4seg")
    installed = Path(spec.origin).parent / "napari.yaml"
    assert installed.read_bytes() == (ROOT / "napari.yaml").read_bytes()


def test_npe2_validate_passes() -> None:
    res = subprocess.run([_npe2_bin(), "validate", PLUGIN], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    manifest = npe2.PluginManifest.from_file(ROOT / "napari.yaml")
    for cmd in manifest.contributions.commands:  # every command's module imports and holds a callable
        module, attr = cmd.python_name.split(":")
        assert importlib.util.find_spec(module) is not None, cmd.python_name
        assert callable(getattr(importlib.import_module(module), attr)), cmd.python_name


def test_napari_discovers_plugin_from_root_manifest() -> None:
    pm = npe2.PluginManager.instance()
    pm.discover()
    found = pm.get_manifest(PLUGIN)
    root = npe2.PluginManifest.from_file(ROOT / "napari.yaml")
    assert {c.id for c in found.contributions.commands} == {c.id for c in root.contributions.commands}
    assert {s.key for s in found.contributions.sample_data} == {"busi", "ircad17_ct"}
    assert {w.display_name for w in found.contributions.widgets} == {"LLM4Seg", "LLM4Seg: Segment", "LLM4Seg: Fine-tune"}
    readers = {r.command for r in pm.iter_compatible_readers([str(ROOT / "sample_data" / "ircad17_ct.nii.gz")])}
    assert f"{PLUGIN}.get_reader" in readers


# ----------------------------------------------------------------------------------------------- reader
def test_get_reader_accepts_only_nifti_and_dicom(tmp_path: Path) -> None:
    assert get_reader(str(ROOT / "sample_data" / "ircad17_ct.nii.gz")) is not None
    assert get_reader(str(ROOT / "sample_data" / "busi" / "images" / "benign (100).png")) is None
    assert get_reader(str(tmp_path)) is None  # empty folder: not DICOM


def test_reader_opens_nifti_with_scale_and_affine(make_napari_viewer, tmp_path: Path) -> None:
    affine = np.array([[-0.5, 0, 0, 3.0], [0, -0.6, 0, 4.0], [0, 0, 2.0, -5.0], [0, 0, 0, 1]])
    vol = (np.arange(4 * 5 * 6).reshape(4, 5, 6) - 100).astype(np.int16)
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, affine), path)
    seg = tmp_path / "vol_seg.nii.gz"
    nib.save(nib.Nifti1Image((vol > 0).astype(np.uint8), affine), seg)
    viewer = make_napari_viewer()
    [image] = viewer.open(str(path), plugin=PLUGIN)
    assert image._type_string == "image" and image.data.shape == (6, 5, 4)
    assert np.allclose(image.scale, [2.0, 0.6, 0.5])
    info = image.metadata["llm4seg"]
    assert np.array_equal(np.asarray(info["affine"]), nib.load(path).affine) and info["source"] == str(path)
    [labels] = viewer.open(str(seg), plugin=PLUGIN)
    assert labels._type_string == "labels" and np.allclose(labels.scale, image.scale)
    assert "class" not in labels.features  # no labels.json: no names invented
    (tmp_path / "labels.json").write_text('{"1": "liver", "3": "portal vein"}')
    [named] = viewer.open(str(seg), plugin=PLUGIN)
    assert list(named.features["class"]) == ["background", "liver", "label 2", "portal vein"]


def test_reader_opens_dicom_folder(make_napari_viewer, tmp_path: Path) -> None:
    from test_io import make_dicom_series

    expected = make_dicom_series(tmp_path / "series")
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(tmp_path / "series"), plugin=PLUGIN)
    assert np.array_equal(layer.data, expected) and layer.data.dtype == np.int16
    assert np.allclose(layer.scale, [2.5, 0.8, 0.7])
    assert layer.metadata["llm4seg"]["meta"]["modality"] == "CT"


# ------------------------------------------------------------------------------------------ sample data
def test_busi_sample(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    layers = viewer.open_sample(PLUGIN, "busi")
    assert [ly._type_string for ly in layers] == ["image", "labels"]
    image, mask = layers
    assert image.data.ndim == 2 and mask.data.shape == image.data.shape
    assert set(np.unique(mask.data).tolist()) == {0, 1}
    assert "Al-Dhabyani" in mask.metadata["llm4seg"]["credit"]["citation"]
    assert list(mask.features["class"]) == ["background", "lesion"]


def test_ct_sample(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    ct, liver = viewer.open_sample(PLUGIN, "ircad17_ct")
    assert ct._type_string == "image" and liver._type_string == "labels"
    assert ct.data.dtype == np.int16 and ct.data.shape[1:] == (256, 256)
    assert np.allclose(ct.scale, [3.2, 1.486, 1.486], atol=1e-4) and np.allclose(liver.scale, ct.scale)
    assert "IRCAD" in ct.metadata["llm4seg"]["credit"]["citation"]
    assert liver.data.max() == 1 and liver.data.sum() > 10_000


def test_sample_files_open_by_drag_and_drop(make_napari_viewer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dropping files runs QtViewer._qt_open; napari's builtins also claim *.nii.gz, so napari asks once."""
    from napari._qt.dialogs import qt_reader_dialog
    from napari.settings import get_settings

    asked: list[str] = []

    def choose_llm4seg(dialog) -> tuple[str, bool]:
        asked.append(dialog._current_file)
        return "LLM4Seg", False

    monkeypatch.setattr(qt_reader_dialog.QtReaderDialog, "get_user_choices", choose_llm4seg)
    viewer = make_napari_viewer()
    qt_viewer = viewer.window._qt_viewer
    qt_viewer._qt_open([str(ROOT / "sample_data" / "ircad17_ct.nii.gz")], stack=False)
    ct = viewer.layers[-1]
    assert len(asked) == 1 and ct._type_string == "image" and np.allclose(ct.scale, [3.2, 1.486, 1.486], atol=1e-4)
    monkeypatch.setattr(get_settings().plugins, "extension2reader", {"*.nii.gz": PLUGIN})  # "remember" ticked
    qt_viewer._qt_open([str(ROOT / "sample_data" / "ircad17_liver_label.nii.gz")], stack=False)
    assert len(asked) == 1 and viewer.layers[-1]._type_string == "labels"
    qt_viewer._qt_open([str(ROOT / "sample_data" / "busi" / "images" / "benign (100).png")], stack=False)
    assert len(asked) == 1 and viewer.layers[-1].data.ndim == 2


# ---------------------------------------------------------------------------------------------- writers
def test_writers_round_trip(make_napari_viewer, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    ct, liver = viewer.open_sample(PLUGIN, "ircad17_ct")
    src = read_image(ROOT / "sample_data" / "ircad17_ct.nii.gz")
    viewer.layers.selection = {liver}
    out = tmp_path / "liver.nii.gz"
    viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
    back = read_image(out)
    assert np.array_equal(back.array, liver.data) and np.array_equal(back.affine, src.affine)
    viewer.layers.selection = {ct}
    viewer.layers.save(str(tmp_path / "ct.nii.gz"), selected=True, plugin=PLUGIN)
    img = read_image(tmp_path / "ct.nii.gz")
    assert img.array.dtype == np.int16 and np.array_equal(img.array, ct.data)
    assert np.array_equal(img.affine, src.affine)

    image, mask = viewer.open_sample(PLUGIN, "busi")
    mask.data[:3, :3] = 7
    viewer.layers.selection = {mask}
    viewer.layers.save(str(tmp_path / "mask.png"), selected=True, plugin=PLUGIN)
    viewer.layers.save(str(tmp_path / "mask.tif"), selected=True, plugin=PLUGIN)
    for name in ("mask.png", "mask.tif"):
        assert np.array_equal(read_image(tmp_path / name).array, mask.data)


def test_writer_builds_affine_from_scale_without_source(make_napari_viewer, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.eye(4, dtype=np.uint8)[None].repeat(3, 0), scale=(3.0, 2.0, 0.5),
                              translate=(1.0, 2.0, 3.0))
    viewer.layers.selection = {layer}
    viewer.layers.save(str(tmp_path / "l.nii.gz"), selected=True, plugin=PLUGIN)
    back = read_image(tmp_path / "l.nii.gz")
    assert back.spacing == (3.0, 2.0, 0.5) and np.array_equal(back.array, layer.data)
    assert np.allclose(back.affine, [[0.5, 0, 0, 3.0], [0, 2.0, 0, 2.0], [0, 0, 3.0, 1.0], [0, 0, 0, 1]])


def test_a_3d_labels_layer_saved_as_png_explains_the_fix(make_napari_viewer, tmp_path: Path) -> None:
    from napari_llm4seg._writer import WriterError

    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.ones((3, 8, 8), np.uint8), name="vol labels")
    viewer.layers.selection = {layer}
    with pytest.raises(WriterError, match="'vol labels'.*PNG holds 2D labels only.*save it as .tif or .nii.gz"):
        viewer.layers.save(str(tmp_path / "vol.png"), selected=True)  # napari picks the writer by extension
    assert not (tmp_path / "vol.png").exists()


def test_a_name_without_extension_takes_the_format_and_bad_files_explain_in_short_lines(tmp_path: Path) -> None:
    from napari_llm4seg._reader import ReaderError, read_layers
    from napari_llm4seg._writer import write_labels_nifti, write_labels_raster

    labels = np.eye(6, dtype=np.uint8)
    [nifti] = write_labels_nifti(str(tmp_path / "mask"), labels, {"name": "mask"})
    [tif] = write_labels_raster(str(tmp_path / "mask2"), labels, {"name": "mask2"})
    assert nifti.endswith("mask.nii.gz") and tif.endswith("mask2.tif")
    assert np.array_equal(read_image(nifti).array, labels) and np.array_equal(read_image(tif).array, labels)
    # class names go to a labels.json beside the file, which the reader gives back
    from napari_llm4seg._reader import class_names_beside

    named = tmp_path / "named"
    named.mkdir()
    meta = {"name": "organs", "metadata": {"llm4seg": {"classes": ["background", "liver", "tumour"]}}}
    [out] = write_labels_nifti(str(named / "organs.nii.gz"), labels * 2, meta)
    assert class_names_beside(Path(out)) == ["background", "liver", "tumour"]
    [layer] = read_layers(out)
    assert list(layer[1]["features"]["class"]) == ["background", "liver", "tumour"]
    other = {"name": "x", "metadata": {"llm4seg": {"classes": ["background", "kidney"]}}}
    with pytest.warns(UserWarning, match="names other classes"):
        write_labels_nifti(str(named / "kidney.nii.gz"), labels, other)
    assert class_names_beside(Path(out)) == ["background", "liver", "tumour"]  # one folder, one set of classes
    broken = tmp_path / ("a_very_long_scan_name_" * 6 + ".nii.gz")
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ReaderError) as info:
        read_layers(str(broken))
    lines = str(info.value).splitlines()
    assert len(lines) > 1 and max(map(len, lines)) <= 80 and "could not open" in lines[0]
