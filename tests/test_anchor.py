"""Fine-tuning on a few corrected slices keeps the rest of the volume (``llm4seg.anchor``), and the change check
says so when a model collapses."""
from __future__ import annotations

import numpy as np
import torch

from _factories import one_thread, organ_volume, trained_tiny  # noqa: F401 - one_thread: autouse
from llm4seg.anchor import ChangeReport, build_context, change_check, with_context
from llm4seg.events import Log, run_to_end
from llm4seg.finetune import TrainingPair, finetune, preset_config, summarise

CLASSES = ["background", "organ"]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def segment_volume(model, image) -> np.ndarray:
    from llm4seg.infer import segment

    return segment(image, model, volume=True, tta=None).labels > 0


def test_corrected_tips_keep_the_organ_and_a_collapse_is_flagged():
    image, mask = organ_volume()
    start = trained_tiny([TrainingPair(image[z], mask[z], f"z{z}") for z in range(0, 24, 2)])
    before = dice(segment_volume(start, image), mask.astype(bool))
    assert before > 0.8
    # the user corrects three slices at the organ's ends: two cleared, one with the organ's tip
    zs = [int(z) for z in np.flatnonzero(mask.reshape(24, -1).any(1))]
    chosen = [zs[0] - 1, zs[0], zs[-1] + 1]
    labels = segment_volume(start, image).astype(np.uint8)
    labels[chosen] = mask[chosen]
    plan = summarise([TrainingPair(image, labels, "vol", slices=chosen)], CLASSES)
    config = preset_config("quick", steps=60, lr=1e-2, crosscheck=0, cache_features=False, train="all", crop=None)
    events: list = []
    free = run_to_end(finetune(start, plan, config, keep=0.0), events.append)
    kept = run_to_end(finetune(start, plan, config), events.append)
    after_free = dice(segment_volume(free.model, image), mask.astype(bool))
    after_kept = dice(segment_volume(kept.model, image), mask.astype(bool))
    assert after_kept >= before - 0.02, (before, after_kept)
    assert not kept.drastic and kept.change.slices > 0 and kept.seconds >= kept.result.seconds
    assert after_free < before - 0.2 and free.drastic, (before, after_free, free.change.describe())
    assert any(isinstance(e, Log) and e.topic == "change-check" and e.level == "warning" for e in events)


def test_context_slices_and_the_change_check():
    image, mask = organ_volume()
    start = trained_tiny([TrainingPair(image[z], mask[z], f"z{z}") for z in range(0, 24, 2)], steps=40)
    plan = summarise([TrainingPair(image, mask, "vol", slices=[12])], CLASSES)
    context = build_context(start, plan, start.card.preprocess, torch.device("cpu"), limit=10, margin=2)
    used = [int(n.rsplit(":z", 1)[1]) for n in context.distilled.names + context.checked.names]
    assert len(used) == 10 and all(abs(z - 12) > 2 for z in used)  # away from the corrected slice
    assert set(context.distilled.names).isdisjoint(context.checked.names)
    same = change_check(start, context.checked, torch.device("cpu"))
    assert not same.drastic and same.agreement == 1.0 and same.start == same.new
    blank = trained_tiny([TrainingPair(image[12], mask[12], "z12")], steps=1)
    with torch.no_grad():
        blank.Conv_1x1.bias.fill_(-50.0)  # a collapsed model: nothing anywhere
    report = change_check(blank, context.checked, torch.device("cpu"))
    assert report.drastic and report.new[0] < report.start[0] / 2, report.describe()
    assert "drastically" in report.describe() and report.to_dict()["drastic"]
    shrunk = ChangeReport(CLASSES, 10, [1000], [700], 0.9)  # -30 %: said, not drastic
    moved = ChangeReport(CLASSES, 10, [1000], [1000], 0.7)  # same size, elsewhere
    assert moved.notable and not moved.drastic
    assert shrunk.notable and not shrunk.drastic and "changed noticeably" in shrunk.describe()
    train = context.distilled.subset([0])
    mixed = with_context(train, context.distilled, keep=0.5)
    assert len(mixed) == 2 * len(context.distilled)  # half corrected (repeated), half context
    assert with_context(train, context.distilled, keep=0.0) is train


def test_a_starting_point_is_not_held():
    image, mask = organ_volume()
    start = trained_tiny([TrainingPair(image[12], mask[12], "z12")], steps=2)
    start.card.name = "gray-start"  # a starting point, not a segmenter: its masks are nothing to keep
    plan = summarise([TrainingPair(image, mask, "vol", slices=[12])], CLASSES)
    events: list = []
    outcome = run_to_end(finetune(start, plan, preset_config("quick", steps=2, crosscheck=0)), events.append)
    assert outcome.change is None and not outcome.drastic
    assert any(isinstance(e, Log) and "starting point" in e.text for e in events)
