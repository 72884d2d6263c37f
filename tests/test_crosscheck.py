"""The check of fine-tuning against its start on the labelled items (``llm4seg.crosscheck``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from _factories import disk_image, one_thread, tiny_model, trained_tiny  # noqa: F401 - one_thread: autouse
from llm4seg.checkpoint import ModelCard
from llm4seg.crosscheck import MARGIN, MIN_ITEMS, NOTHING_TO_KEEP, SMALL_FOLDS, CheckResult, check_folds, fold_items
from llm4seg.events import Log, Progress, run_to_end
from llm4seg.finetune import TrainingPair, finetune, preset_config, summarise
from llm4seg.preprocess import Preprocessing
from llm4seg.train import TrainConfig, build_slices, sources_from_arrays

CLASSES = ["background", "lesion"]


def _slices(pairs):
    sources = sources_from_arrays([(p.image, p.labels) for p in pairs], names=[p.name for p in pairs])
    return build_slices(sources, Preprocessing(size=32), CLASSES)


def _model(trained_on=None):
    if trained_on is not None:
        return trained_tiny(trained_on)
    model = tiny_model()
    model.card = ModelCard(name="tiny", classes=CLASSES, model=model.config.to_dict(),
                           preprocessing=Preprocessing(size=32).to_dict())
    return model.eval()


def test_fold_items_deals_sources_then_slices_along_z():
    img, mask = disk_image(32, 32)
    images = _slices([TrainingPair(img, mask, f"p{i}") for i in range(5)])
    assert fold_items(images, 2, min_items=2) == [[0, 1, 2], [3, 4]]   # blocks of neighbouring files
    assert fold_items(images, 2) == [] and MIN_ITEMS > 5                 # too few to check by default
    volume = np.stack([img] * 7)
    labels = np.stack([mask] * 7)
    labels[0] = 0
    one = _slices([TrainingPair(volume, labels, "v")])   # 6 labelled slices of one volume
    assert len(one) == 6 and fold_items(one, 2, min_items=2) == [[0, 2, 4], [1, 3, 5]]
    assert fold_items(one.subset([0]), 2, min_items=0) == []


def test_a_few_separate_images_are_checked_in_thirds_slices_of_a_volume_are_not():
    img, mask = disk_image(32, 32)
    images = _slices([TrainingPair(img, mask, f"p{i}") for i in range(5)])
    assert check_folds(images, 2) == 0                                    # the default: from MIN_ITEMS on
    assert check_folds(images, 2, min_images=3) == SMALL_FOLDS == 3
    assert fold_items(images, SMALL_FOLDS, min_items=0) == [[0, 1], [2, 3], [4]]
    assert check_folds(images.subset([0, 1]), 2, min_images=3) == 0     # two images: nothing to check with
    assert check_folds(images.subset([0, 1, 2]), 2, min_images=3) == 3  # leave one out
    eight = _slices([TrainingPair(img, mask, f"p{i}") for i in range(MIN_ITEMS)])
    assert check_folds(eight, 2, min_images=3) == 2
    volume = np.stack([img] * 6)
    one = _slices([TrainingPair(volume, np.stack([mask] * 6), "v")])
    assert check_folds(one, 2, min_images=3) == 0                        # 6 slices of one volume: no check



def test_the_start_is_kept_only_when_fine_tuning_loses_more_than_the_margin():
    clear = CheckResult(2, (0.8, 0.9, 0.7), (0.5, 0.6, 0.4))
    assert clear.keep_start and clear.difference == pytest.approx((-0.3, 0.0))
    small = CheckResult(2, (0.8, 0.8, 0.8, 0.8), (0.9, 0.6, 0.85, 0.7))   # -0.04: the copies' handicap
    assert not small.keep_start and -MARGIN < small.difference[0] < 0
    assert CheckResult(2, (0.8, 0.8), (0.74, 0.74)).keep_start and not CheckResult(2, (0.5, 0.6), (0.7, 0.8)).keep_start
    d = small.to_dict()
    assert d["kept"] == "fine-tuned" and d["items"] == 4 and d["per_item"][1] == [0.8, 0.6]
    assert "0.762 after (-0.038 ± 0.069)" in small.describe()
    # slices of a volume are pooled: a tip slice of 50 pixels that the copies lose counts for its 50 pixels
    tip = CheckResult(2, (0.95, 0.95, 0.2), (0.97, 0.97, 0.0), weights=(5000.0, 5000.0, 50.0))
    assert tip.difference[0] > 0 > CheckResult(2, tip.start, tip.finetuned).difference[0]
    assert tip.to_dict()["pooled"] and not tip.keep_start


def shifted(mask: np.ndarray, by: int = 10) -> np.ndarray:
    return np.roll(mask, by, axis=1)


@pytest.mark.parametrize("items, folds", [(MIN_ITEMS, 2), (4, SMALL_FOLDS)])
def test_a_start_that_already_segments_better_is_kept(items, folds):
    """Half the labelled images carry masks shifted off the object: a copy trained on one half segments the
    other half worse than the start, which already finds the disks, so the start comes back unchanged (with
    2 folds from MIN_ITEMS images, with 3 below)."""
    disks = [TrainingPair(*disk_image(32, 32, seed=i), name=f"d{i}") for i in range(8)]
    start = _model(trained_on=disks)
    pairs = []
    for i in range(items):
        img, mask = disk_image(32, 32, seed=20 + i)
        pairs.append(TrainingPair(img, mask if i < items // 2 else shifted(mask), name=f"p{i}"))  # a fold each
    events: list = []
    config = preset_config("quick", steps=60, lr=1e-2, crop=None, crosscheck=2)
    outcome = run_to_end(finetune(start, summarise(pairs, CLASSES), config), events.append)
    check = outcome.check
    assert check is not None and check.items == items and check.folds == folds
    assert check.keep_start and outcome.kept_start
    assert check.start_dice > 0.5 and check.finetuned_dice < check.start_dice
    assert outcome.result.steps == 0 and outcome.model is not start
    assert all(torch.equal(v, start.state_dict()[k]) for k, v in outcome.model.state_dict().items())
    kept = [e for e in events if isinstance(e, Log) and e.topic == "kept-start"]
    assert len(kept) == 1 and kept[0].level == "warning" and "kept" in kept[0].text
    checking = [e for e in events if isinstance(e, Progress) and e.phase == "checking"]
    assert checking and checking[-1].done == checking[-1].total == 60 * folds
    assert not [e for e in events if isinstance(e, Progress) and e.phase == "training"]


def test_a_check_that_fine_tuning_helps_trains_on_everything():
    from scipy.ndimage import binary_dilation

    wide = [TrainingPair(img, binary_dilation(mask, iterations=4).astype(mask.dtype), f"w{i}")
            for i, (img, mask) in enumerate(disk_image(32, 32, seed=i) for i in range(8))]
    start = _model(trained_on=wide)   # draws the disks too wide: the labelled disks teach it better
    pairs = [TrainingPair(*disk_image(32, 32, seed=20 + i), name=f"p{i}") for i in range(MIN_ITEMS)]
    events: list = []
    config = preset_config("quick", steps=40, lr=1e-2, crop=None, crosscheck=2)
    outcome = run_to_end(finetune(start, summarise(pairs, CLASSES), config), events.append)
    assert outcome.check is not None and not outcome.kept_start
    assert outcome.check.finetuned_dice > outcome.check.start_dice
    assert outcome.result.steps == 40 and outcome.train_items == MIN_ITEMS
    assert any(isinstance(e, Log) and "fine-tuning on all of them" in e.text for e in events)


def test_a_start_with_nothing_to_keep_is_not_checked():
    """An untrained start finds none of the disks: no copies are trained, the run fine-tunes on everything."""
    start = _model()
    pairs = [TrainingPair(*disk_image(32, 32, seed=20 + i), name=f"p{i}") for i in range(4)]
    events: list = []
    outcome = run_to_end(finetune(start, summarise(pairs, CLASSES),
                                  preset_config("quick", steps=5, crop=None, crosscheck=2)), events.append)
    check = outcome.check
    assert check is not None and not check.ran and not outcome.kept_start and check.start_dice < NOTHING_TO_KEEP
    assert check.items == 4 and outcome.result.steps == 5
    assert not [e for e in events if isinstance(e, Progress) and e.phase == "checking"]
    assert any(isinstance(e, Log) and "nothing to keep" in e.text and "fine-tuning on all" in e.text for e in events)
    assert check.to_dict()["ran"] is False and "no check" in check.describe()


def test_too_few_items_are_not_checked_and_it_is_said():
    start = _model()
    img, mask = disk_image(32, 32)
    events: list = []
    outcome = run_to_end(finetune(start, summarise([TrainingPair(img, mask, "one")], CLASSES),
                                  preset_config("quick", steps=3, crop=None, crosscheck=2)), events.append)
    assert outcome.check is None and outcome.result.steps == 3
    assert any(isinstance(e, Log) and f"fewer than {MIN_ITEMS} labelled" in e.text for e in events)


def test_crosscheck_setting_is_validated():
    with pytest.raises(ValueError, match="crosscheck"):
        TrainConfig(crosscheck=1)
    assert preset_config("quick").crosscheck in (0, 2)
