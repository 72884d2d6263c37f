"""``llm4seg.adapt`` and the fine-tuning policies built on it: RGB stems, BatchNorm statistics, validation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from _factories import disk_image, one_thread, tiny_model  # noqa: F401 - one_thread: autouse
from llm4seg.adapt import LUMA, blend_weights, expand_to_rgb, recalibrate_batchnorm
from llm4seg.checkpoint import ModelCard
from llm4seg.events import Log, run_to_end
from llm4seg.finetune import MIN_VAL_ITEMS, NO_VALIDATION, TrainingPair, finetune, preset_config, summarise, \
    colour_config, image_config, validation_fraction
from llm4seg.infer import segment
from llm4seg.preprocess import Preprocessing
from llm4seg.train import TrainConfig, fit, from_arrays

CLASSES = ["background", "lesion"]


def carded(channels: int = 1):
    model = tiny_model(in_channels=channels)
    model.card = ModelCard(name="tiny", classes=CLASSES, model=model.config.to_dict(),
                           preprocessing=Preprocessing(size=32, channels=channels).to_dict())
    return model.eval()


def colour_image(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    img, mask = disk_image(32, 32, seed=seed)
    rng = np.random.default_rng(seed)
    rgb = np.stack([img, np.roll(img, 3, 1), rng.integers(0, 255, img.shape)], -1).astype(np.uint8)
    return rgb, mask


def test_expand_to_rgb_keeps_the_output_on_colour_input():
    model = carded()
    rgb, _ = colour_image()
    before = segment(rgb, model, return_probs=True, fast=False).probs
    expand_to_rgb(model)
    assert model.config.in_channels == 3 and model.card.preprocess.channels == 3
    assert model.stem.conv[0].weight.shape[1] == 3
    after = segment(rgb, model, return_probs=True, fast=False).probs
    assert np.abs(after - before).max() < 1e-4  # luma-weighted split: exact for any colour, not only gray
    # and the RGB model now sees colour: swapping channels changes its output, unlike the 1-channel model
    with torch.no_grad():
        model.stem.conv[0].weight.add_(torch.randn_like(model.stem.conv[0].weight))
    swapped = segment(rgb[..., ::-1].copy(), model, return_probs=True, fast=False).probs
    assert np.abs(swapped - segment(rgb, model, return_probs=True, fast=False).probs).max() > 1e-3
    assert expand_to_rgb(model) is model  # already 3 channels: unchanged


def test_recalibrate_batchnorm_measures_the_new_data():
    model = carded()
    bn = model.stem.conv[1]
    x = torch.randn(16, 1, 32, 32) * 3 + 2
    with torch.no_grad():
        conv_out = model.stem.conv[0](x)
    seen = recalibrate_batchnorm(model, [x[:8], x[8:]])
    assert seen == 16 and not model.training
    assert torch.allclose(bn.running_mean, conv_out.mean((0, 2, 3)), atol=1e-4)
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    assert recalibrate_batchnorm(model, [x[:1]]) == 0  # batches of one are skipped: nothing changes
    assert torch.allclose(bn.running_mean, conv_out.mean((0, 2, 3)), atol=1e-4)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())


def test_select_last_returns_the_last_weights():
    pairs = [disk_image(32, 32, seed=i) for i in range(4)]
    data = from_arrays(pairs, Preprocessing(size=32))
    config = TrainConfig(steps=4, batch_size=2, optimizer="adamw", lr=1e-2, augment=False, val_every=1, select="last")
    with_val, without = tiny_model(), tiny_model()
    result = run_to_end(fit(with_val, data.subset([0, 1, 2]), data.subset([3]), config))
    run_to_end(fit(without, data.subset([0, 1, 2]), None, config))
    assert result.best_step == 4 and len(result.history["val_iou"]) == 4
    assert all(torch.equal(v, without.state_dict()[k]) for k, v in with_val.state_dict().items())


def test_validation_policy():
    assert validation_fraction(MIN_VAL_ITEMS - 1, None) == 0.0
    assert validation_fraction(MIN_VAL_ITEMS, None) == 0.2
    assert validation_fraction(3, 0.5) == 0.5
    for preset in ("quick", "thorough"):
        assert preset_config(preset).select == "last"


def test_gray_stored_as_colour_keeps_a_gray_model_gray():
    model = carded()
    pairs = []
    for i in range(3):
        img, mask = disk_image(32, 32, seed=i)
        rgb = np.repeat(img[..., None], 3, -1).astype(np.uint8)
        rgb[0, :2] = (255, 255, 0)  # a yellow caliper mark
        pairs.append(TrainingPair(rgb, mask, name=f"g{i}", rgb=True))
    events: list = []
    outcome = run_to_end(finetune(model, summarise(pairs, CLASSES), preset_config("quick", steps=2)), events.append)
    texts = [e.text for e in events if isinstance(e, Log)]
    assert outcome.model.config.in_channels == 1 and outcome.model.card.preprocess.size == 32
    assert any("gray stored as colour" in t for t in texts)
    assert segment(pairs[0].image, outcome.model).labels.shape == (32, 32)


def test_colour_pairs_turn_a_gray_model_into_rgb_and_report_it():
    model = carded()
    pairs = [TrainingPair(*colour_image(i), name=f"c{i}", rgb=True) for i in range(3)]
    events: list = []
    config = preset_config("thorough", steps=2, recalibrate_bn=True)
    outcome = run_to_end(finetune(model, summarise(pairs, CLASSES), config), events.append)
    texts = [e.text for e in events if isinstance(e, Log)]
    assert outcome.model.config.in_channels == 3 and model.config.in_channels == 1  # the base is untouched
    assert any("RGB" in t for t in texts) and any("BatchNorm statistics re-estimated on 3" in t for t in texts)
    assert NO_VALIDATION in texts and outcome.val_items == 0  # 3 < MIN_VAL_ITEMS: all train
    assert segment(pairs[0].image, outcome.model).labels.shape == (32, 32)
    gray = run_to_end(finetune(model, summarise(pairs, CLASSES), config, expand_rgb=False))
    assert gray.model.config.in_channels == 1


def test_quick_trains_the_whole_network_when_a_gray_model_meets_colour():
    """The quick preset freezes the encoder, which cannot then learn colour: on a gray model expanded to RGB
    it trains the whole network (stem included), says so, and records it; gray pairs or a 3-channel start,
    or ``learn_colour=False``, keep the decoder-only preset."""
    model = carded()
    stem = model.stem.conv[0].weight.detach().clone()
    colour = summarise([TrainingPair(*colour_image(i), name=f"c{i}", rgb=True) for i in range(3)], CLASSES)
    events: list = []
    quick = preset_config("quick", steps=3)
    outcome = run_to_end(finetune(model, colour, quick), events.append)
    assert outcome.config.train == "all" and not outcome.config.cache_features and outcome.config.crop is None
    assert outcome.config.steps == 3 and outcome.config.augment and outcome.config.crosscheck == 0
    assert any("whole network trains" in e.text for e in events if isinstance(e, Log))
    trained_stem = outcome.model.stem.conv[0].weight.detach()
    assert not torch.allclose(trained_stem, stem.repeat(1, 3, 1, 1) * torch.tensor(LUMA).view(1, 3, 1, 1))
    assert colour_config(quick.replace(learn_colour=False)) == quick.replace(learn_colour=False)
    off = run_to_end(finetune(model, colour, quick.replace(learn_colour=False)))
    assert off.config.train == "decoder"
    gray = summarise([TrainingPair(*disk_image(32, 32, seed=i), name=f"g{i}") for i in range(3)], CLASSES)
    assert run_to_end(finetune(model, gray, quick)).config.train == "decoder"
    assert run_to_end(finetune(carded(3), colour, quick)).config.train == "decoder"
    one = summarise([TrainingPair(*colour_image(0), name="c0", rgb=True)], CLASSES)  # too few for the whole network
    assert run_to_end(finetune(model, one, quick)).config.train == "decoder"


def test_a_gray_model_learns_colour_at_the_colour_size():
    """With ``colour_size`` below the model's size, the whole network trains at that size, says so, and the
    fine-tuned model segments at it; gray pairs (no colour to learn) keep the model's size."""
    model = carded()
    model.card.preprocessing = Preprocessing(size=64, channels=1).to_dict()
    colour = summarise([TrainingPair(*colour_image(i), name=f"c{i}", rgb=True) for i in range(3)], CLASSES)
    gray = summarise([TrainingPair(*disk_image(32, 32, seed=i), name=f"g{i}") for i in range(3)], CLASSES)
    config = preset_config("quick", steps=2, colour_size=32)
    events: list = []
    small = run_to_end(finetune(model, colour, config), events.append)
    assert small.config.train == "all" and small.model.card.preprocess.size == 32
    assert any("whole network trains at 32²" in e.text for e in events if isinstance(e, Log))
    assert segment(colour.pairs[0].image, small.model).labels.shape == (32, 32)
    assert run_to_end(finetune(model, gray, config)).model.card.preprocess.size == 64
    assert run_to_end(finetune(model, colour, config.replace(colour_size=None))).model.card.preprocess.size == 64
    with pytest.raises(ValueError, match="colour_size"):
        config.replace(colour_size=40)


def test_whole_network_training_on_random_crops(monkeypatch):
    """Without cached features ``crop`` trains on per-sample windows of the augmented images: labels stay
    aligned with their pixels, and training runs on inputs smaller than the model's."""
    from llm4seg.train import steps
    from llm4seg.train.steps import crop_batch

    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8)
    cx, cy = crop_batch(x, x[:, 0].long(), torch.tensor([[0, 0], [3, 4]]), 4)
    assert cx.shape == (2, 1, 4, 4) and torch.equal(cx[1, 0], x[1, 0, 3:7, 4:8]) and torch.equal(cx[:, 0].long(), cy)
    pairs = summarise([TrainingPair(*disk_image(64, 64, seed=i), name=f"g{i}") for i in range(3)], CLASSES)
    seen: list = []
    monkeypatch.setattr(steps, "crop_batch", lambda *a: seen.append(a[0].shape) or crop_batch(*a))
    config = preset_config("thorough", steps=2, crop=16, val_every=None)
    outcome = run_to_end(finetune(carded(), pairs, config))
    assert outcome.result.steps == 2 and outcome.config.crop == 16
    assert seen == [(4, 1, 32, 32)] * 2  # every step cut its batch of 32² inputs


def test_volume_recalibration_uses_unlabelled_slices():
    model = carded()
    img, mask = disk_image(32, 32)
    vol = np.stack([img] * 20)
    lab = np.zeros((20, 32, 32), np.uint8)
    lab[5] = mask
    events: list = []
    run_to_end(finetune(model, summarise([TrainingPair(vol, lab, "v")], CLASSES),
                        preset_config("thorough", steps=1, recalibrate_bn=True)), events.append)
    assert any(isinstance(e, Log) and "re-estimated on 20 slice" in e.text for e in events)


@pytest.mark.parametrize("n", [MIN_VAL_ITEMS])
def test_enough_items_hold_some_out(n):
    pairs = [TrainingPair(*disk_image(32, 32, seed=i), name=f"p{i}") for i in range(n)]
    outcome = run_to_end(finetune(carded(), summarise(pairs, CLASSES), preset_config("thorough", steps=1)))
    assert outcome.val_items == round(0.2 * n) and outcome.train_items == n - round(0.2 * n)


def test_ct_pairs_without_a_window_train_in_the_abdomen_window():
    img, mask = disk_image(32, 32)
    vol = np.stack([img.astype(np.int16) * 4 - 1000] * 4)  # Hounsfield units
    lab = np.zeros(vol.shape, np.uint8)
    lab[1] = mask
    events: list = []
    outcome = run_to_end(finetune(carded(), summarise([TrainingPair(vol, lab, "ct")], CLASSES),
                                  preset_config("thorough", steps=1)), events.append)
    assert outcome.model.card.preprocess.window == (40.0, 400.0)
    assert any(isinstance(e, Log) and "abdomen window" in e.text for e in events)


def test_blend_moves_the_trained_weights_part_of_the_way_back():
    model = carded()
    pairs = [TrainingPair(*disk_image(32, 32, seed=i), name=f"p{i}") for i in range(2)]
    plan = summarise(pairs, CLASSES)
    full = run_to_end(finetune(model, plan, preset_config("thorough", steps=3))).model
    events: list = []
    half = run_to_end(finetune(model, plan, preset_config("thorough", steps=3, blend=0.5)), events.append).model
    start, end, mid = model.state_dict(), full.state_dict(), half.state_dict()
    moved = [k for k in start if start[k].is_floating_point() and not torch.equal(start[k], end[k])]
    assert moved  # training changed weights, and the blend put each halfway
    for k in moved:
        torch.testing.assert_close(mid[k], (start[k] + end[k]) / 2, atol=1e-6, rtol=1e-5)
    assert any(isinstance(e, Log) and "blended" in e.text for e in events)
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())  # the base is untouched
    with pytest.raises(ValueError, match="blend"):
        TrainConfig(blend=0.0)
    with pytest.raises(ValueError, match="stem.conv.0.weight has shape"):
        blend_weights(tiny_model(), tiny_model(in_channels=3, dims=(8, 8, 16, 16, 32)), 0.5)
    with pytest.raises(ValueError, match="same architecture"):
        blend_weights(tiny_model(), tiny_model(llm="smollm2-135m:15"), 0.5)


def test_quick_flips_2d_images_but_not_slices_of_volumes():
    """2D images have no fixed side: quick trains on cached flipped/rotated versions of them, says so, and the
    fine-tuned card keeps the test-time flips of tta="auto"; a volume's slices train as they are."""
    from _widget_models import ct_volume
    from llm4seg.finetune import finetuned_card
    from llm4seg.infer import resolve_tta

    model = carded()
    quick = preset_config("quick", steps=3, crosscheck=0)
    images = summarise([TrainingPair(*disk_image(32, 32, seed=i), name=f"g{i}") for i in range(3)], CLASSES)
    events: list = []
    outcome = run_to_end(finetune(model, images, quick), events.append)
    assert outcome.config.augment and outcome.config.train == "decoder" and outcome.config.cache_features
    assert any("flips and rotations too" in e.text for e in events if isinstance(e, Log))
    assert resolve_tta("auto", finetuned_card(outcome)) == "flips"
    volume = summarise([TrainingPair(*ct_volume(), name="ct")], CLASSES)
    flat = run_to_end(finetune(model, volume, quick))
    assert not flat.config.augment and resolve_tta("auto", finetuned_card(flat)) is None
    assert image_config(quick.replace(augment_images=False), images) == quick.replace(augment_images=False)
