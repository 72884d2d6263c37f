"""The few-shot benchmark's own arithmetic: which slices a simulated user labels, scores, summaries, overrides."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.fewshot import _overrides, _views, post_options, scores, summary
from benchmarks.fewshot_tasks import pick_slices


def test_pick_slices_spread_over_the_structure_only():
    mask = np.zeros((40, 4, 4), np.uint8)
    mask[10:30, 1, 1] = 1
    even = pick_slices(mask, 5, 0)
    assert even == [12, 16, 20, 24, 28] and all(mask[z].any() for z in even)
    for seed in (1, 2, 3):
        jittered = pick_slices(mask, 5, seed)
        assert len(jittered) == 5 and all(10 <= z < 30 for z in jittered)
        assert all(10 + 4 * i <= z < 10 + 4 * (i + 1) for i, z in enumerate(jittered))  # one per fifth
    assert pick_slices(mask, 30, 0) == list(range(10, 30))  # fewer slices than asked: all of them


def test_scores_and_summary():
    a = np.zeros((4, 4), bool)
    b = a.copy()
    a[:2], b[1:3] = True, True
    assert scores(a, b) == pytest.approx((0.5, 1 / 3))
    assert scores(np.zeros((2, 2)), np.zeros((2, 2))) == (1.0, 1.0)
    rows = [dict(task="t", base="b", k=5, dice=d, iou=d / 2, train_s=10.0) for d in (0.6, 0.8)]
    (row,) = summary(rows)
    assert row["n"] == 2 and row["dice"][0] == pytest.approx(0.7) and row["dice"][1] == pytest.approx(0.1414, abs=1e-4)


def test_overrides_are_typed():
    assert _overrides(["steps=150", "lr=3e-4", "augment=true", "crop=none", "train=all"]) == {
        "steps": 150, "lr": 3e-4, "augment": True, "crop": None, "train": "all"}


def test_post_view_cleans_the_same_masks():
    pred = np.zeros((3, 12, 12), np.uint8)
    pred[:, 2:8, 2:8] = 1
    pred[1, 4, 4] = 0  # a hole (closed in 3D)
    pred[1, 10, 10] = 1  # a stray pixel
    assert list(_views(pred, None, "3d")) == [""]
    views = _views(pred, post_options(["largest", "fill"]), "3d")
    assert views[""] is pred and views[" +post"][1, 4, 4] and not views[" +post"][1, 10, 10]
    assert post_options([]) is None


def test_fit_variants_parse_to_typed_overrides():
    from benchmarks.fewshot_fit import parse_variant

    assert parse_variant("quick") == ("quick", {})
    assert parse_variant("lr:crosscheck=0,lr=3e-4,augment=true") == ("lr", {"crosscheck": 0, "lr": 3e-4, "augment": True})


def test_the_simulated_user_corrects_the_worst_unlabelled_slice():
    from benchmarks.fewshot_suggest import worst_slice

    mask = np.zeros((6, 8, 8), np.uint8)
    mask[1:4, 2:6, 2:6] = 1
    pred = mask.copy()
    pred[2, 2:4, 2:6] = 0  # 8 missed pixels inside the structure
    pred[5, :4, :4] = 1  # a false object of 16 pixels on an empty slice
    assert worst_slice(pred, mask, [1]) == 5
    assert worst_slice(pred, mask, [1, 5]) == 2  # labelled slices are never proposed


def test_the_simulated_user_corrects_the_beyond_slice_only_when_it_is_wrong():
    from benchmarks.fewshot_suggest import beyond_slice

    mask = np.zeros((8, 6, 6), np.uint8)
    mask[1:5, 1:4, 1:4] = 1
    pred = mask.copy()
    pred[7, :, :] = 1  # a false object far above the labelled slices 1 and 3
    assert beyond_slice(pred, mask, [1, 3]) == 7
    pred[7] = 0
    assert beyond_slice(pred, mask, [1]) is None  # slice 4 is drawn beyond slice 1, 3 apart, and right: left alone
    mask[4] = 0
    assert beyond_slice(pred, mask, [1]) == 4  # the same drawing where there is nothing: corrected


def test_error_table_splits_the_mistakes_by_where_they_are():
    from benchmarks.fewshot_errors import error_table

    mask = np.zeros((8, 4, 4), np.uint8)
    mask[1:6, 1:3, 1:3] = 1
    pred = mask.copy()
    pred[3, 1, 1] = 0  # a miss inside the labelled range 2-4
    pred[5, 0, 0] = 1  # a false voxel beyond it, on a slice with the structure
    pred[7, :2, :] = 1  # 8 false voxels beyond, on an empty slice
    assert error_table(pred, mask, [2, 4]) == {"inside": {"fp": 0, "fn": 1}, "beyond": {"fp": 9, "fn": 0},
                                               "empty": {"fp": 8, "fn": 0}}


def test_auto_base_is_the_widgets_start():
    from benchmarks.fewshot import widget_start
    from benchmarks.fewshot_tasks import Task

    assert widget_start(Task("hippocampus", "3d", True, "MRI")) == "gray-start"
    assert widget_start(Task("isic", "2d", False, "dermoscopy")) == "default"
