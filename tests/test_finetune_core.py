"""``llm4seg.finetune`` without a GUI: checking pairs, presets, training a copy, the card's provenance."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from _factories import disk_image, one_thread, tiny_model  # noqa: F401 - one_thread: autouse
from llm4seg.checkpoint import ModelCard
from llm4seg.events import CancelToken, Log, Metric, run_to_end
from llm4seg.finetune import ERASED_ONLY, NO_VALIDATION, TrainingPair, finetune, finetuned_card, preset_config, summarise
from llm4seg.preprocess import Preprocessing
from llm4seg.train import NothingToLearn

CLASSES = ["background", "lesion"]


def model_with_card(size: int | None = 32):
    model = tiny_model()
    model.card = ModelCard(name="tiny", classes=CLASSES, model=model.config.to_dict(),
                           preprocessing=Preprocessing(size=size).to_dict())
    return model.eval()


def test_summarise_counts_and_problems():
    img, mask = disk_image(32, 32)
    vol = np.stack([img] * 6)
    lab = np.zeros((6, 32, 32), np.int32)
    lab[1], lab[4] = mask, mask
    plan = summarise([TrainingPair(img, mask, "a"), TrainingPair(vol, lab, "v")], CLASSES)
    assert plan.ok and plan.slices == [[0], [1, 4]] and plan.n_slices == 3
    assert plan.pixels["lesion"] == 3 * int(mask.sum()) and plan.pixels["background"] == 3 * 32 * 32 - 3 * int(mask.sum())
    assert "2 pairs, 3 slices" in plan.describe()
    assert summarise([TrainingPair(vol, lab, "v")], CLASSES, z_range=(0, 3)).slices == [[0, 1, 2]]
    rgb = np.stack([img] * 3, axis=-1)
    assert summarise([TrainingPair(rgb, mask, "rgb", rgb=True)], CLASSES).ok


def test_listed_slices_train_and_empty_ones_are_background():
    """A pair's listed slices (those corrected in a Segment output) train, also when left empty; its other
    slices do not, even with labels (the model's own uncorrected guesses)."""
    img, mask = disk_image(32, 32)
    vol = np.stack([img] * 6)
    lab = np.zeros((6, 32, 32), np.uint8)
    lab[1], lab[4] = mask, mask
    plan = summarise([TrainingPair(vol, lab, "v", slices=[1, 3, 9])], CLASSES)  # 9: not a slice, ignored
    assert plan.ok and plan.slices == [[1, 3]] and plan.cleared == 1
    assert plan.pixels["background"] == 2 * 32 * 32 - int(mask.sum())
    assert "2 slices (1 corrected to empty" in plan.describe()
    assert summarise([TrainingPair(vol, lab, "v")], CLASSES).slices == [[1, 4]]  # default: slices with labels
    only_empty = summarise([TrainingPair(vol, np.zeros_like(lab), "v", slices=[2])], CLASSES)
    assert only_empty.ok and ERASED_ONLY in only_empty.notes  # the rest of the volume (Hold) shows the object
    with pytest.raises(NothingToLearn, match="keep Hold on"):
        run_to_end(finetune(model_with_card(), only_empty, preset_config("quick", steps=1), keep=0.0))
    assert not summarise([TrainingPair(img, np.zeros_like(mask), "e", slices=[0])], CLASSES).ok  # 2D: no rest

    empty = summarise([TrainingPair(img, np.zeros_like(mask), "e")], CLASSES)
    assert not empty.ok and "no labelled image" in empty.reason() and "skipped" in empty.notes[0]
    assert "no training pair" in summarise([], CLASSES).reason()
    assert "do not match" in summarise([TrainingPair(img, mask[:10], "m")], CLASSES).reason()
    assert "integers" in summarise([TrainingPair(img, mask.astype(float), "f")], CLASSES).reason()
    two = summarise([TrainingPair(img, mask * 2, "c")], CLASSES)
    assert "label value 2" in two.reason() and "1 class (1 = lesion)" in two.reason()
    assert "negative" in summarise([TrainingPair(img, -mask.astype(np.int8), "n")], CLASSES).reason()
    unknown = summarise([TrainingPair(img, mask * 3, "u")], None)
    assert unknown.ok and unknown.class_names == ["background", "class 1", "class 2", "class 3"]


def test_presets():
    quick, thorough = preset_config("quick"), preset_config("thorough", steps=7)
    assert quick.preset == "quick" and quick.select == "last" and thorough.select == "last"
    assert thorough.train == "all" and thorough.steps == 7 and thorough.preset == "thorough"
    with pytest.raises(ValueError, match="unknown fine-tuning preset"):
        preset_config("slow")


def test_finetune_trains_a_copy_and_leaves_inputs_alone():
    model = model_with_card()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pairs = [TrainingPair(*disk_image(32, 32, seed=i), name=f"p{i}") for i in range(3)]
    labels_before = [p.labels.copy() for p in pairs]
    events: list = []
    outcome = run_to_end(finetune(model, summarise(pairs, CLASSES), preset_config("thorough", steps=3, val_every=1),
                                  val_fraction=0.2), events.append)
    assert outcome.result.status == "done" and outcome.model is not model and outcome.val_items == 1
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(np.array_equal(p.labels, lb) for p, lb in zip(pairs, labels_before))
    assert [e.step for e in events if isinstance(e, Metric) and e.name == "loss"] == [1, 2, 3]
    assert outcome.model.card.preprocess.size == 32
    card = finetuned_card(outcome, base="base.safetensors")
    assert card.name == "tiny-finetuned" and card.training["base_checkpoint"] == "base.safetensors"
    outcome.base_card = card  # fine-tuning a fine-tuned model again: the name does not grow
    assert finetuned_card(outcome).name == "tiny-finetuned"
    assert card.training["pairs"] == 3 and card.training["steps"] == 3 and "val_dice" in card.metrics

    native = model_with_card(size=None)
    single = run_to_end(finetune(native, summarise(pairs[:1], CLASSES), preset_config("thorough", steps=1)),
                        events.append)
    assert single.val_items == 0 and any(isinstance(e, Log) and e.text == NO_VALIDATION for e in events)
    assert single.model.card.preprocess.size == 256  # a native-size card trains at 256²

    token = CancelToken()
    token.cancel()
    assert run_to_end(finetune(model, summarise(pairs, CLASSES), preset_config("thorough"), cancel=token)) is None
    with pytest.raises(NothingToLearn):
        run_to_end(finetune(model, summarise([], CLASSES), preset_config("quick")))
