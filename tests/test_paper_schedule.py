"""scripts/paper_schedule.py: its hand-written step is torch's SGD, packing is lossless for gray images,
and pack → train writes checkpoints that load with their layer referenced by sha256."""
from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch
from _factories import one_thread, tiny_model  # noqa: F401
from test_train_data import make_folder

from llm4seg.checkpoint import load_checkpoint, read_card
from llm4seg.preprocess import Preprocessing
from llm4seg.train.losses import make_loss

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("paper_schedule", ROOT / "scripts" / "paper_schedule.py")
paper = importlib.util.module_from_spec(spec)
spec.loader.exec_module(paper)
gpu_pack = sys.modules["gpu_pack"]


def test_the_step_is_torch_sgd_with_momentum_and_weight_decay_on_the_symmetric_batch():
    torch.manual_seed(0)
    x_all = torch.randint(0, 256, (10, 1, 32, 32), dtype=torch.uint8)
    y_all = (torch.rand(10, 32, 32) > 0.6).to(torch.uint8)
    prep = Preprocessing(size=32)
    model = tiny_model().train()
    ref, start = copy.deepcopy(model), copy.deepcopy(model.state_dict())
    step = paper.Step(model, x_all, y_all, prep, amp=False, channels_last=False)
    opt = torch.optim.SGD([p for p in ref.parameters() if p.requires_grad], lr=0.01, momentum=0.9, weight_decay=1e-4)
    for lr in (0.01, 0.005):  # two steps: the momentum buffer matters in the second
        idx = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
        bits = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [0, 0, 0], [1, 1, 0], [0, 1, 1], [1, 0, 1]],
                            dtype=torch.bool)
        step.set(idx, bits, torch.tensor(lr))
        step()
        x = x_all[idx].float().div(255).sub(prep.mean).div(prep.std)
        y = y_all[idx]
        # transpose, then flip x, then flip y, each where its bit is set
        x = torch.stack([_sym(xi, b) for xi, b in zip(x, bits)])
        y = torch.stack([_sym(yi, b) for yi, b in zip(y, bits)])
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        make_loss(1)(ref(x).float(), y).backward()
        opt.step()
    for (name, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), start.values()))

def _sym(t: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    if bits[0]:
        t = t.transpose(-1, -2)
    if bits[1]:
        t = t.flip(-1)
    if bits[2]:
        t = t.flip(-2)
    return t


def test_gray_images_pack_losslessly():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 1, 24, 24), dtype=np.uint8)
    packed = gpu_pack.encode(images, "x")
    assert np.array_equal(gpu_pack.decode(packed, "x"), images)
    rgb = rng.integers(0, 256, (2, 3, 24, 24), dtype=np.uint8)
    assert gpu_pack.decode(gpu_pack.encode(rgb, "x"), "x").shape == rgb.shape  # JPEG: same shape, close values


def test_pack_then_train_writes_loadable_checkpoints_and_metrics(tmp_path, monkeypatch):
    data = tmp_path / "data"
    make_folder(data / "busi", n=12, size=48)
    (tmp_path / "busi-lesion.val.txt").write_text("case0\ncase1\n")
    monkeypatch.setattr(gpu_pack, "SPLITS", tmp_path)
    monkeypatch.setitem(gpu_pack.TASKS, "busi", gpu_pack.PackTask("busi", 1, 32, "busi-lesion.val.txt", None, "lesion"))
    monkeypatch.setattr(paper, "SIZE", 64)  # packed at 32², trained at 64²: the device-side resize runs
    pack = tmp_path / "pack"
    assert paper.main(["pack", "--data", str(data), "--out", str(pack), "--tasks", "busi", "--no-llm"]) == 0
    meta = json.loads((pack / "meta.json").read_text())
    assert meta["tasks"]["busi"]["counts"] == {"train": 10, "val": 2}
    out = tmp_path / "out"
    argv = ["train", "--data", str(pack), "--out", str(out), "--tasks", "busi", "busi:jitter=1:seed=1", "--device",
            "cpu", "--epochs", "2",
            "--probe-steps", "1", "--val-every", "1"]
    assert paper.main(argv) == 0
    report = json.loads((out / "metrics.json").read_text())["tasks"]["busi"]
    assert report["steps"] == 2 and report["planned_epochs"] == 2 and len(report["curve"]) == 2
    assert report["ms_per_step"] > 0 and 0.0 <= report["final"]["val_iou"] <= 1.0
    path = out / "busi-lesion-paper.safetensors"
    card = read_card(path)
    assert card.preprocessing["size"] == 64 and card.training["preset"] == "paper" and not card.llm["embedded"]
    model = load_checkpoint(path, device="cpu")  # the frozen layer is found again by its sha256
    assert model.config.in_channels == 1
    jittered = json.loads((out / "metrics.json").read_text())["tasks"]["busi:jitter=1:seed=1"]
    assert jittered["jitter"] == 1.0 and jittered["seed"] == 1 and jittered["steps"] == 2
    card = read_card(out / "busi-lesion-paper-jitter1-s1.safetensors")
    assert card.training["config"]["jitter"] == 1.0 and card.training["config"]["seed"] == 1
    other = load_checkpoint(out / "busi-lesion-paper-jitter1-s1.safetensors", device="cpu")
    assert any(not torch.equal(a, b) for a, b in zip(other.state_dict().values(), model.state_dict().values()))


def test_runs_parse_name_their_checkpoints_and_share_the_budget():
    runs = sys.modules["gpu_runs"]
    spec = runs.parse_run("polyp:jitter=1:seed=2")
    assert (spec.task, spec.jitter, spec.seed) == ("polyp", 1.0, 2)
    assert spec.label == "polyp:jitter=1:seed=2" and spec.checkpoint == "polyp-paper-jitter1-s2"
    assert runs.parse_run("busi").checkpoint == "busi-lesion-paper" and runs.parse_run("busi", seed=3).seed == 3
    for bad in ("mri", "busi:lr=1", "busi:jitter=-1", "busi:seed"):
        try:
            runs.parse_run(bad)
        except ValueError as exc:
            assert bad.split(":")[0] in str(exc)
        else:
            raise AssertionError(bad)
    # one after another: the sum of the runs' times; side by side: the longest run in rounds
    assert runs.plan_epochs([10, 20], [0.1, 0.1], 1000, 300) == (300, 900.0)
    assert runs.plan_epochs([10, 20], [0.1, 0.1], 450, 300) == (150, 900.0)
    assert runs.plan_epochs([10, 20], [0.1, 0.1], 450, 300, round_s=0.1) == (225, 600.0)


def test_the_jittered_step_draws_new_jitter_every_step():
    torch.manual_seed(0)
    x_all = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8)
    y_all = (torch.rand(4, 32, 32) > 0.6).to(torch.uint8)
    step = paper.Step(tiny_model().train(), x_all, y_all, Preprocessing(size=32), amp=False, channels_last=False,
                      jitter=1.0)
    step.set(torch.arange(8) % 4, torch.zeros(8, 3, dtype=torch.bool), torch.tensor(0.0))
    (x1, y1), (x2, _) = step._batch(), step._batch()
    assert x1.shape == (8, 1, 32, 32) and y1.dtype == y_all.dtype
    assert not torch.equal(x1, x2) and not torch.equal(x1[0], x1[4])  # fresh draws per step and per sample
