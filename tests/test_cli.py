"""The llm4seg command line: info, segment, models, convert and its error handling."""
from __future__ import annotations

import json
import subprocess
import sys

import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pytest
import torch

from _factories import disk_image, tiny_model
from llm4seg.checkpoint import ModelCard, save_checkpoint
from llm4seg.cli import main
from llm4seg.cli import EXIT_ERROR


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_checkpoint(path, tiny_model(), ModelCard(name="tiny", classes=["background", "lesion"]))


def test_info_json(ckpt, capsys):
    assert main(["info", str(ckpt), "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["name"] == "tiny" and card["classes"] == ["background", "lesion"] and card["untrained"] is False


def test_info_default_is_the_shipped_model(capsys):
    assert main(["info", "default", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["name"] == "busi-lesion" and card["untrained"] is False and card["metrics"]["val_iou"] > 0.3


def test_info_default_without_shipped_models_says_untrained(capsys, monkeypatch):
    import llm4seg.models

    monkeypatch.setattr(llm4seg.models, "list_models", lambda: [])
    assert main(["info", "default"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m:15" in out and "UNTRAINED" in out


def test_segment_png(ckpt, tmp_path, capsys):
    img, _ = disk_image(60, 90)
    src = tmp_path / "us.png"
    iio.imwrite(src, img)
    assert main(["segment", str(src), "--checkpoint", str(ckpt), "--out", str(tmp_path / "out"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    labels = iio.imread(report["output"])
    assert labels.shape == (60, 90) and labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1}
    assert report["output"].endswith("us_labels.png")
    # never overwrite silently
    assert main(["segment", str(src), "--checkpoint", str(ckpt), "--out", str(tmp_path / "out")]) == 2
    assert "exists" in capsys.readouterr().err


def test_segment_tta_is_auto_by_default(tmp_path, capsys):
    img, _ = disk_image(40, 40)
    src = tmp_path / "us.png"
    iio.imwrite(src, img)
    flipped = tmp_path / "flipped.safetensors"
    save_checkpoint(flipped, tiny_model(), ModelCard(name="f", classes=["background", "lesion"],
                                                     training={"config": {"augment": True}}))

    def report(*extra):
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        assert main(["segment", str(src), "--checkpoint", str(flipped), "--out", str(out), "--json", *extra]) == 0
        return json.loads(capsys.readouterr().out)
    assert report()["tta"] == "flips"  # trained with flips: averaged over them
    assert report("--tta", "off")["tta"] is None
    assert report("--tta", "d4")["tta"] == "d4"


def test_segment_postprocessing_flags(tmp_path, capsys, monkeypatch):
    import llm4seg.models
    from _widget_models import ThresholdModel, disk
    from llm4seg.postprocess import postprocess

    monkeypatch.setattr(llm4seg.models, "load_model", lambda *a, **k: ThresholdModel())
    img, _ = disk(64, 80)
    img[30:34, 38:42] = 30  # a hole in the disk
    img[2:5, 2:5] = 200  # a speck away from it
    src = tmp_path / "us.png"
    iio.imwrite(src, img)
    assert main(["segment", str(src), "--out", str(tmp_path / "raw"), "--json"]) == 0
    raw = iio.imread(json.loads(capsys.readouterr().out)["output"])
    assert raw[3, 3] == 1 and raw[31, 39] == 0  # the model kept the speck and the hole
    assert main(["segment", str(src), "--out", str(tmp_path / "clean"), "--json", "--largest", "--fill-holes",
                 "--min-size", "20"]) == 0
    report = json.loads(capsys.readouterr().out)
    clean = iio.imread(report["output"])
    assert clean[3, 3] == 0 and clean[31, 39] == 1
    assert np.array_equal(clean, postprocess(raw, largest=True, fill_holes=True, min_size=20))
    assert report["postprocessing"] == "largest component, fill holes, remove < 20 px (3D)"
    assert report["voxels"]["lesion"] == int(clean.sum())
    assert main(["segment", str(src), "--out", str(tmp_path / "bad"), "--min-size", "-3"]) == 2
    assert "min_size must be >= 0" in capsys.readouterr().err


def test_segment_nifti_keeps_affine(ckpt, tmp_path):
    vol = (np.random.default_rng(0).normal(0, 300, (48, 40, 5))).astype(np.int16)  # (x, y, z) in the file
    affine = np.diag([-0.7, -0.7, 2.5, 1.0])
    affine[:3, 3] = [10, -20, 30]
    src = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(vol, affine), src)
    assert main(["segment", str(src), "--checkpoint", str(ckpt), "--out", str(tmp_path), "--window", "abdomen"]) == 0
    out = nib.load(tmp_path / "ct_labels.nii.gz")
    assert out.shape == vol.shape
    np.testing.assert_array_equal(out.affine, nib.load(src).affine)  # exactly the source file's affine


def test_convert_plain_state_dict(tmp_path, capsys):
    model = tiny_model()
    src = tmp_path / "plain.pth"
    torch.save(model.state_dict(), src)
    # the tiny test model has non-default dims, so conversion to the paper architecture must explain the mismatch
    assert main(["convert", str(src), "--out", str(tmp_path / "c.safetensors"), "--llm", "none", "--in-channels", "1"]) == 2
    assert "does not match" in capsys.readouterr().err


def test_models_lists_each_shipped_model_with_modality_and_classes(capsys):
    from llm4seg.checkpoint import read_card
    from llm4seg.models import list_models

    assert main(["models"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    entries = list_models()
    assert len(lines) == len(entries) and entries
    for line, entry in zip(lines, entries):
        card = read_card(entry.path)
        assert line.startswith(entry.name) and f"classes {', '.join(card.classes[1:])}" in line
        assert ("CT (Hounsfield" in line) == (card.preprocess.window is not None)
        assert ("input RGB" in line) == (card.preprocess.channels == 3)
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [e.name for e in entries] and all(r["size"] for r in rows)


@pytest.mark.parametrize("args,needle", [
    (["info", "missing.safetensors"], "no checkpoint"),
    (["segment", "nope.png", "--checkpoint", "default", "--out", "x"], "nope.png"),
])
def test_errors_are_one_line_with_nonzero_exit(args, needle, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "llm4seg.cli", *args], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == EXIT_ERROR
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback of a machine without CUDA")
def test_segment_on_a_missing_gpu_falls_back_to_the_cpu(ckpt, tmp_path, capsys):
    img, _ = disk_image(32, 48)
    src = tmp_path / "us.png"
    iio.imwrite(src, img)
    assert main(["segment", str(src), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--device", "cuda",
                 "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["device"] == "cpu" and "falls back to the CPU" in captured.err
    assert any("falls back to the CPU" in n for n in report["notes"])
