"""Clicks as prompts: encoding, the simulated user, prompt channels, training with clicks, files and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llm4seg.adapt import add_prompt_channels
from llm4seg.fastpath import prepare_for_inference
from llm4seg.interactive import Box, Click, click_session, iou, next_click, refine
from llm4seg.interactive.clickfile import apply_clicks, read_clicks
from llm4seg.interactive.prompts import click_radius, prompt_channels, render_clicks, to_model_coords
from llm4seg.interactive.propagate import _carry
from llm4seg.model import ModelConfig
from llm4seg.train.prompts import add_training_prompts, perturb_mask

from _factories import disk_image, one_thread, tiny_model  # noqa: F401


def test_click_maps_are_disks_of_the_model_radius():
    pts = torch.tensor([[[10.0, 20.0, 1.0], [40.0, 5.0, -1.0]]])
    pos, neg = render_clicks(pts, (64, 64), 3.0)[0]
    assert pos[10, 20] == 1 and pos[10, 23] == 1 and pos[10, 24] == 0 and neg[10, 20] == 0
    assert neg[40, 5] == 1 and pos[40, 5] == 0
    assert int(pos.sum()) == int(neg.sum()) == 29  # the lattice points of a radius-3 disk
    assert click_radius(128) == pytest.approx(2.56) and click_radius(256) == pytest.approx(5.12)


def test_prompt_channels_follow_the_resize_to_the_model():
    assert to_model_coords(99.5, 0, (200, 100), (100, 100), True) == (pytest.approx(49.5), pytest.approx(0.0))
    assert to_model_coords(7, 9, (30, 40), (32, 48), False) == (7.0, 9.0)  # padding keeps pixel coordinates
    previous = np.zeros((200, 100), np.uint8)
    previous[:100] = 1
    maps = prompt_channels(("previous", "positive", "negative", "box"), [Click(150, 50), Click(20, 20, False)],
                           previous, Box(0, 0, 99, 49), (200, 100), (64, 64), True)
    assert maps.shape == (4, 64, 64)
    assert maps[0, :30].min() == 1 and maps[0, 34:].max() == 0
    assert maps[1, 48, 32] == 1 and maps[2, 6, 13] == 1 and maps[1].sum() > 0
    assert maps[3, 10, 10] == 1 and maps[3, 40, 40] == 0


def test_simulated_user_clicks_the_centre_of_the_largest_error():
    target = np.zeros((50, 50), bool)
    target[10:30, 10:30] = True
    first = next_click(np.zeros_like(target), target)
    assert first.positive and 18 <= first.y <= 21 and 18 <= first.x <= 21
    pred = target.copy()
    pred[35:49, 35:49] = True  # a false region larger than what is missed
    pred[10:14, 10:14] = False
    click = next_click(pred, target)
    assert not click.positive and 40 <= click.y <= 43 and 40 <= click.x <= 43
    assert next_click(target, target) is None
    rng = np.random.default_rng(0)
    jittered = {(c.y, c.x) for c in (next_click(np.zeros_like(target), target, jitter=0.5, rng=rng) for _ in range(20))}
    assert len(jittered) > 3 and all(12 <= y <= 27 and 12 <= x <= 27 for y, x in jittered)


def test_click_session_stops_when_the_masks_agree():
    target = np.zeros((40, 40), bool)
    target[5:25, 5:25] = True
    sessions = list(click_session(lambda clicks, prev: target.astype(np.uint8), target))
    assert len(sessions) == 1 and iou(sessions[0][1], target) == 1.0


def test_prompt_channels_start_at_zero_so_the_model_is_unchanged():
    model = tiny_model()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        before = model(x)
        add_prompt_channels(model)
        after, zeros = model(x), model(torch.cat([x, torch.zeros(2, 3, 32, 32)], 1))
        fused = prepare_for_inference(model)(x)
        clicked = model(torch.cat([x, torch.ones(2, 3, 32, 32)], 1))
    assert model.config.prompts == ("previous", "positive", "negative") and model.config.stem_channels == 4
    assert torch.equal(before, after) and torch.equal(before, zeros)
    assert torch.allclose(before, fused, atol=1e-4)
    assert torch.equal(before, clicked)  # zero weights: the prompts do nothing until trained
    with pytest.raises(ValueError, match="prompt channels"):
        model(torch.randn(1, 2, 32, 32))
    assert ModelConfig.from_dict(model.config.to_dict()).prompts == model.config.prompts
    with pytest.raises(ValueError, match="prompts must be"):
        ModelConfig(prompts=("clicks",))


def test_training_prompts_mix_none_priors_and_clicks():
    model = add_prompt_channels(tiny_model())
    x = torch.randn(16, 1, 32, 32)
    y = torch.zeros(16, 32, 32, dtype=torch.long)
    y[:, 8:24, 8:24] = 1
    out = add_training_prompts(model, x, y, torch.Generator().manual_seed(0))
    assert out.shape == (16, 4, 32, 32) and torch.equal(out[:, :1], x)
    prompts = out[:, 1:].flatten(2).sum(2)
    assert (prompts.sum(1) == 0).sum() >= 2  # samples without prompts
    assert (prompts[:, 1] > 0).sum() >= 2  # samples with a positive click
    grown = perturb_mask(y[0].numpy() > 0, np.random.default_rng(1))
    assert 0.3 < iou(grown, y[0].numpy()) < 1.0 or grown.sum() != y[0].sum()


def test_training_with_clicks_runs_and_records_the_prompts(tmp_path):
    from llm4seg.checkpoint import load_checkpoint
    from llm4seg.events import run_to_end
    from llm4seg.preprocess import Preprocessing
    from llm4seg.train import TrainConfig, build_slices, fit, sources_from_arrays

    pairs = [disk_image(32, 32, seed=s) for s in range(4)]
    data = build_slices(sources_from_arrays(pairs, names=[f"d{i}" for i in range(4)]), Preprocessing(size=32),
                        ["background", "disk"])
    model = tiny_model()
    config = TrainConfig(steps=3, batch_size=4, optimizer="adamw", lr=1e-3, select="last", prompts="clicks")
    result = run_to_end(fit(model, data, None, config, out=tmp_path / "m.safetensors"))
    assert result.status == "done" and np.isfinite(result.history["loss"][-1][1])
    loaded = load_checkpoint(tmp_path / "m.safetensors", device="cpu")
    assert loaded.config.prompts == ("previous", "positive", "negative")
    with pytest.raises(ValueError, match="train='all'"):
        TrainConfig.quick(prompts="clicks")


def test_refine_falls_back_to_seeds_on_a_model_without_prompts():
    image, mask = disk_image(64, 64)
    model = tiny_model()
    auto = refine(image, model, [])
    assert auto.shape == image.shape and auto.dtype == np.uint8
    previous = np.zeros_like(mask)
    out = refine(image, model, [Click(32, 32)], previous=previous)
    assert out[32, 32] == 1  # a positive click's own pixel is in the mask
    removed = refine(image, model, [Click(32, 32, positive=False)], previous=mask)
    assert removed[32, 32] == 0 and removed[:5].sum() == mask[:5].sum()  # far from the click, unchanged
    with pytest.raises(ValueError, match="no prompt channels"):
        refine(image, model, [Click(1, 1)], method="network")
    with pytest.raises(ValueError, match="several slices"):
        refine(np.stack([image] * 3), model, [Click(1, 1, z=0), Click(2, 2, z=1)])


def test_box_alone_keeps_the_mask_inside_it():
    image, _ = disk_image(64, 64)
    out = refine(image, tiny_model(), [], box=Box(20, 20, 44, 44))
    assert out[:19].sum() == 0 and out[:, 46:].sum() == 0


def test_carry_keeps_the_components_touching_the_previous_slice():
    auto = np.zeros((20, 20), np.uint8)
    auto[2:6, 2:6] = 1
    auto[12:18, 12:18] = 1
    previous = np.zeros_like(auto)
    previous[13:15, 13:15] = 1
    kept = _carry(auto, previous)
    assert kept[14, 14] == 1 and kept[3, 3] == 0


def test_click_files_json_and_napari_csv(tmp_path):
    js = tmp_path / "c.json"
    js.write_text(json.dumps([{"y": 3, "x": 4}, {"y": 5.5, "x": 6, "positive": False, "z": 2}]))
    assert read_clicks(js) == [Click(3, 4, True), Click(5.5, 6, False, 2)]
    csv = tmp_path / "points.csv"
    csv.write_text("index,axis-0,axis-1,axis-2,positive\n0,2.0,10.0,11.0,True\n1,2.0,20.0,21.0,False\n")
    assert read_clicks(csv) == [Click(10, 11, True, 2), Click(20, 21, False, 2)]
    bad = tmp_path / "bad.json"
    bad.write_text('[{"x": 1}]')
    with pytest.raises(ValueError, match='needs "y" and "x"'):
        read_clicks(bad)


def test_apply_clicks_changes_only_the_clicked_slice():
    image, mask = disk_image(48, 48)
    volume = np.stack([image] * 3)
    labels = np.stack([mask] * 3)
    out = apply_clicks(volume, labels, tiny_model(), [Click(24, 24, False, 1)])
    assert out[1, 24, 24] == 0 and np.array_equal(out[0], labels[0]) and np.array_equal(out[2], labels[2])
    with pytest.raises(ValueError, match="need z"):
        apply_clicks(volume, labels, tiny_model(), [Click(24, 24)])


def test_cli_segment_with_clicks(tmp_path, capsys):
    from PIL import Image

    from llm4seg.checkpoint import save_checkpoint
    from llm4seg.cli import main

    image, _ = disk_image(64, 64)
    Image.fromarray(image).save(tmp_path / "img.png")
    save_checkpoint(tmp_path / "tiny.safetensors", tiny_model())
    (tmp_path / "clicks.json").write_text(json.dumps([{"y": 32, "x": 32, "positive": True}]))
    args = [str(tmp_path / "img.png"), "-c", str(tmp_path / "tiny.safetensors"), "--tta", "off"]
    assert main(["segment", *args, "-o", str(tmp_path / "auto")]) == 0
    assert main(["segment", *args, "-o", str(tmp_path / "clicked"), "--clicks", str(tmp_path / "clicks.json"),
                 "--click-model", str(tmp_path / "tiny.safetensors")]) == 0
    out = np.asarray(Image.open(tmp_path / "clicked" / "img_labels.png"))
    assert out[32, 32] > 0
    (tmp_path / "bad.json").write_text("{")
    assert main(["segment", *args, "-o", str(tmp_path / "x"), "--clicks", str(tmp_path / "bad.json")]) != 0
    assert "not valid JSON" in capsys.readouterr().err


def test_zoom_box_frames_the_previous_mask_and_the_clicks():
    from llm4seg.interactive.refine import zoom_box

    previous = np.zeros((200, 300), np.uint8)
    previous[50:70, 100:140] = 1
    y0, y1, x0, x1 = zoom_box((200, 300), [Click(60, 150)], previous)
    assert y0 <= 50 and y1 >= 70 and x0 <= 100 and x1 >= 151 and (y1 - y0) * (x1 - x0) < 0.5 * 200 * 300
    assert zoom_box((200, 300), [Click(60, 150)], None) is None  # a first click on an empty mask: whole image
    big = np.ones((200, 300), np.uint8)
    assert zoom_box((200, 300), [Click(5, 5)], big) is None  # the crop would be most of the image


def test_honour_clicks_makes_the_mask_agree_with_every_click():
    from llm4seg.interactive.refine import honour_clicks

    mask = np.zeros((40, 40), np.uint8)
    mask[5:25, 5:25] = 1  # the object
    mask[30:34, 30:34] = 1  # a false island
    out = honour_clicks(mask, [Click(32, 32, False), Click(15, 15, False), Click(36, 5)], 2.0)
    assert out[30:34, 30:34].sum() == 0  # the island goes whole
    assert out[15, 15] == 0 and out[6, 6] == 1  # inside the object only a disk goes
    assert out[36, 5] == 1 and out[36, 9] == 0  # a positive click outside adds a disk


def test_fine_tuning_a_click_model_keeps_its_prompt_channels():
    from llm4seg.checkpoint import ModelCard
    from llm4seg.events import run_to_end
    from llm4seg.finetune import TrainingPair, finetune, preset_config, summarise
    from llm4seg.preprocess import Preprocessing

    model = add_prompt_channels(tiny_model())
    model.card = ModelCard(name="tiny-clicks", classes=["background", "disk"], model=model.config.to_dict(),
                           preprocessing=Preprocessing(size=32).to_dict())
    pairs = [TrainingPair(*disk_image(32, 32, seed=s), name=f"d{s}") for s in range(3)]
    outcome = run_to_end(finetune(model, summarise(pairs, model.card.classes), preset_config("quick", steps=3)))
    assert outcome.model.config.prompts == model.config.prompts
    thorough = run_to_end(finetune(model, summarise(pairs, model.card.classes), preset_config("thorough", steps=2)))
    assert thorough.config.prompts == "clicks"  # trained whole: with simulated clicks
    image, _ = disk_image(32, 32)
    assert refine(image, outcome.model, [Click(16, 16)]).shape == image.shape
