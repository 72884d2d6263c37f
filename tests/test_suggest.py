"""``llm4seg.suggest``: ranking slices to label next by the model's uncertainty."""
from __future__ import annotations

import numpy as np
import pytest

from llm4seg.suggest import beyond_labels, slice_uncertainty, suggest_slices


def probs_volume() -> np.ndarray:
    """10 slices: 0-2 empty and certain, 3 confident object, 6 a half-sure blob, 8 a coin flip."""
    p = np.full((10, 16, 16), 0.001, np.float32)
    p[3, 4:12, 4:12] = 0.999
    p[6, 4:12, 4:12] = 0.8
    p[8, 4:12, 4:12] = 0.5
    return p


def test_uncertainty_orders_slices_by_doubt():
    s = slice_uncertainty(probs_volume())
    assert s[8] == pytest.approx(1.0, abs=1e-3)  # p = 0.5: one bit per pixel of the region
    assert s[8] > s[6] > s[3] >= 0 and s[0] == 0.0
    two_class = np.stack([1 - probs_volume(), probs_volume()], axis=1)
    assert np.allclose(slice_uncertainty(two_class), s, atol=1e-4)  # softmax form agrees with sigmoid form
    with pytest.raises(ValueError, match="expected probabilities"):
        slice_uncertainty(np.zeros((4, 4)))


def test_suggestions_skip_labelled_neighbours_and_certain_slices():
    p = probs_volume()
    assert [s.z for s in suggest_slices(p, k=5, min_gap=0)] == [8, 6, 3]  # empty slices are never suggested
    assert [s.z for s in suggest_slices(p, labelled=[7], k=5, min_gap=1)] == [3]  # 6 and 8 touch slice 7
    p[9] = p[8]
    assert [s.z for s in suggest_slices(p, k=2, min_gap=1)] == [8, 6]  # 9 sits next to 8: spread out


def test_min_area_drops_slices_with_only_a_stray_blob():
    p = probs_volume()
    p[1, 0:2, 0:2] = 0.55  # a tiny, very unsure blob: high score, nothing to paint
    assert 1 in [s.z for s in suggest_slices(p, k=5, min_gap=0, min_area=0.0)]
    assert [s.z for s in suggest_slices(p, k=5, min_gap=0, min_area=0.25)] == [8, 6, 3]


def test_beyond_labels_lists_confident_drawings_outside_the_labelled_range():
    fg = np.zeros((12, 10, 10), bool)
    fg[3:8, 3:7, 3:7] = True  # the structure, labelled on slices 3 and 6 (16 pixels a slice)
    fg[2, 4:6, 4:6] = True  # its lower tip (4 pixels)
    fg[10, :, :5] = True  # a large confident false object above the top labelled slice (50 pixels)
    fg[11, :3, :3] = True  # 9 pixels
    found = beyond_labels(fg, [3, 6], k=5, min_gap=0)
    assert [s.z for s in found] == [10, 7, 11, 2] and all(s.kind == "beyond" for s in found)
    assert found[0].score == pytest.approx(0.5)  # half the slice drawn
    assert [s.z for s in beyond_labels(fg, [3, 6], k=5, min_gap=1)] == [10]  # 2, 7, 11 touch 3, 6, 10
    assert beyond_labels(fg, [], k=2) == [] and beyond_labels(np.zeros((4, 4), bool), [1]) == []
    assert suggest_slices(probs_volume(), k=1)[0].kind == "uncertain"
