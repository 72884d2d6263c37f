"""Label clean-up: small objects, holes, largest component; 2D, per slice and 3D."""
from __future__ import annotations

import numpy as np
import pytest

from llm4seg.postprocess import PostprocessOptions, postprocess


def _scene() -> np.ndarray:
    labels = np.zeros((20, 20), np.uint8)
    labels[2:10, 2:10] = 1  # big object of class 1 with a hole
    labels[5:7, 5:7] = 0
    labels[15:17, 15:17] = 1  # small object of class 1
    labels[12:18, 2:8] = 2  # class 2 with a class-1 pixel inside
    labels[14, 4] = 1
    return labels


def test_min_size_removes_small_objects_per_class():
    out = postprocess(_scene(), min_size=5)
    assert out[15:17, 15:17].sum() == 0 and out[14, 4] == 0  # 4 px and 1 px objects gone
    assert (out[2:10, 2:10] == 1).sum() == 60 and (out == 2).sum() == 35


def test_fill_holes_claims_background_only():
    labels = _scene()
    out = postprocess(labels, fill_holes=True)
    assert (out[5:7, 5:7] == 1).all()
    assert out[14, 4] == 1 and (out == 2).sum() == (labels == 2).sum()  # class 2 keeps its hole's pixel


def test_largest_component_per_class_and_dtype_kept():
    labels = _scene().astype(np.int32)
    out = postprocess(labels, largest=True)
    assert out.dtype == np.int32
    assert out[15:17, 15:17].sum() == 0 and out[14, 4] == 0 and out[3, 3] == 1
    assert postprocess(labels) is not labels and np.array_equal(postprocess(labels), labels)


def test_3d_versus_per_slice():
    vol = np.zeros((3, 10, 10), np.uint8)
    vol[0, 1:4, 1:4] = 1  # only in slice 0: in 3D it is the smaller component
    vol[1:3, 5:9, 5:9] = 1
    assert postprocess(vol, largest=True, mode="3d")[0].sum() == 0
    assert postprocess(vol, largest=True, mode="slice")[0].sum() == 9


def test_options_are_checked():
    with pytest.raises(ValueError, match="mode"):
        PostprocessOptions(mode="4d")
    with pytest.raises(ValueError, match="min_size"):
        PostprocessOptions(min_size=-1)
    with pytest.raises(ValueError, match="labels"):
        postprocess(np.zeros((2, 2, 2, 2), np.uint8), largest=True)
    assert PostprocessOptions().describe() == "none"
    assert "fill holes" in PostprocessOptions(fill_holes=True).describe()
