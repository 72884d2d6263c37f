"""``llm4seg train`` and ``llm4seg evaluate`` on tiny datasets made here."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llm4seg.checkpoint import load_checkpoint, read_card
from llm4seg.cli import main
from llm4seg.infer import segment
from llm4seg.io import read_image
from llm4seg.train.state import state_path_for
from llm4seg.cli import EXIT_ERROR
from test_train_data import make_folder, make_volume

FAST = ["--size", "32", "--batch-size", "2", "--no-llm", "--threads", "1"]


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("busi_like"), n=6, size=40)


def test_train_then_evaluate_json(folder, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert main(["train", str(folder), "--out", str(out), "--steps", "4", *FAST, "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert "val IoU" in text and f"wrote {out}" in text  # a one-line summary per validation/epoch, then the result
    card = read_card(out)
    assert card.training["steps"] == 4 and card.training["data"] == str(folder)
    assert card.model["llm"] is None and card.preprocessing["size"] == 32
    assert state_path_for(out).is_file()
    assert main(["evaluate", str(folder), "--checkpoint", str(out), "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    metrics = json.loads(lines[0])
    assert metrics["n"] == 6 and 0.0 <= metrics["iou"] <= 1.0 and 0.0 <= metrics["dice"] <= 1.0
    ious, dices = [], []  # the same numbers, by segmenting each image here and scoring it by hand
    model = load_checkpoint(out, device="cpu")
    for i in range(6):
        image = read_image(folder / "images" / f"case{i}.png").array
        truth = read_image(folder / "masks" / "0" / f"case{i}.png").array > 0
        pred = segment(image, model).labels == 1
        inter, union, total = (pred & truth).sum(), (pred | truth).sum(), pred.sum() + truth.sum()
        ious.append(inter / union if union else 1.0)
        dices.append(2 * inter / total if total else 1.0)
    assert abs(metrics["iou"] - float(np.mean(ious))) < 1e-6 and abs(metrics["dice"] - float(np.mean(dices))) < 1e-6
    assert {"iou_pooled", "sensitivity", "precision", "specificity", "accuracy", "hd95"} <= set(metrics)
    assert main(["evaluate", str(folder), "--checkpoint", str(out), "--no-hd95"]) == 0
    assert "iou" in capsys.readouterr().out
    assert main(["evaluate", str(folder), "--checkpoint", str(out), "--no-hd95", "--json", "--tta", "flips"]) == 0
    flipped = []  # --tta scores the test-time flips' masks
    for i in range(6):
        image = read_image(folder / "images" / f"case{i}.png").array
        truth = read_image(folder / "masks" / "0" / f"case{i}.png").array > 0
        pred = segment(image, model, tta="flips").labels == 1
        flipped.append(2 * (pred & truth).sum() / (pred.sum() + truth.sum()) if pred.sum() + truth.sum() else 1.0)
    assert abs(json.loads(capsys.readouterr().out)["dice"] - float(np.mean(flipped))) < 1e-6


def test_resume_and_init_fine_tune(folder, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert main(["train", str(folder), "--out", str(out), "--steps", "2", *FAST, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "done" and summary["steps"] == 2
    assert main(["train", str(folder), "--resume", str(out), "--steps", "4", "--threads", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 4
    tuned = tmp_path / "tuned.safetensors"
    assert main(["train", str(folder), "--init", str(out), "--out", str(tuned), "--steps", "3",
                 "--batch-size", "2", "--threads", "1", "--json"]) == 0
    card = read_card(tuned)
    assert card.training["preset"] == "quick" and card.training["base_checkpoint"] == str(out)
    assert card.training["config"]["train"] == "decoder"
    load_checkpoint(tuned, device="cpu")


def test_nifti_volume_with_window_and_classes(tmp_path, capsys):
    make_volume(tmp_path / "ct", z=6, size=32)
    out = tmp_path / "liver.safetensors"
    assert main(["train", str(tmp_path / "ct"), "--out", str(out), "--steps", "2", *FAST,
                 "--window", "40,400", "--classes", "liver=1+2", "--val-split", "0.3"]) == 0
    card = read_card(out)
    assert card.classes == ["background", "liver"] and card.preprocessing["window"] == [40.0, 400.0]
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "ct"), "--checkpoint", str(out), "--json", "--classes", "liver=1+2"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 6 and metrics["classes"] == ["liver"]


def test_multiclass_and_val_list(folder, tmp_path, capsys):
    root = make_folder(tmp_path / "mc", n=4, size=32, classes=2)
    (tmp_path / "val.txt").write_text("case0\n")
    out = tmp_path / "mc.safetensors"
    assert main(["train", str(root), "--out", str(out), "--steps", "2", *FAST,
                 "--val-list", str(tmp_path / "val.txt")]) == 0
    card = read_card(out)
    assert card.model["num_classes"] == 3 and card.training["val_items"] == 1


@pytest.mark.parametrize("args,message", [
    (["train", "{missing}", "--out", "{out}"], "does not exist"),
    (["train", "{data}", "--out", "{exists}", "--steps", "1"], "exists: pass --overwrite"),
    (["train", "{data}", "--out", "{out}", "--window", "wide"], "--window 'wide'"),
    (["train", "{data}", "--out", "{tmp}/m.pt"], "checkpoints are .safetensors"),
    (["train", "{data}", "--out", "{out}", "--classes", "spleen"], "unknown class 'spleen'"),
    (["train", "{data}", "--resume", "{out}"], "no training state"),
    (["evaluate", "{data}", "--checkpoint", "{tmp}/none.safetensors"], "no checkpoint"),
])
def test_bad_input_exits_non_zero_with_one_line(folder, tmp_path, capsys, args, message):
    exists = tmp_path / "exists.safetensors"
    exists.write_bytes(b"x")
    subs = dict(missing=str(tmp_path / "nope"), out=str(tmp_path / "o.safetensors"), data=str(folder),
                exists=str(exists), tmp=str(tmp_path))
    code = main([a.format(**subs) for a in args])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_ERROR and message in err and len(err.splitlines()) == 1, err


def test_fine_tune_keeps_the_checkpoint_class_names(folder, tmp_path):
    from _factories import tiny_model
    from llm4seg.checkpoint import default_card, save_checkpoint

    base = tmp_path / "lesion.safetensors"
    model = tiny_model()
    card = default_card(model, classes=["background", "lesion"])
    card.preprocessing["size"] = 32
    save_checkpoint(base, model, card)
    tuned = tmp_path / "tuned.safetensors"
    assert main(["train", str(folder), "--init", str(base), "--out", str(tuned), "--steps", "2",
                 "--threads", "1"]) == 0
    tuned_card = read_card(tuned)
    assert tuned_card.classes == ["background", "lesion"] and tuned_card.preprocessing["size"] == 32


def test_train_faithful_builds_the_reference_architecture(folder, tmp_path):
    out = tmp_path / "f.safetensors"
    assert main(["train", str(folder), "--out", str(out), "--steps", "1", *FAST, "--faithful"]) == 0
    model = read_card(out).model
    assert (model["upsample"], model["position"], model["calibrate"]) == ("bilinear", "paper", False)
    assert load_checkpoint(out, device="cpu").Up5.up[0].mode == "bilinear"


def test_train_adapters_only_arm(folder, tmp_path):
    out = tmp_path / "a.safetensors"
    fast = [a for a in FAST if a != "--no-llm"]
    assert main(["train", str(folder), "--out", str(out), "--steps", "1", *fast, "--adapters-only"]) == 0
    assert read_card(out).model["llm_init"] == "none"
