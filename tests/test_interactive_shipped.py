"""The shipped click model: clicks add what was missed and remove what was wrong; no clicks is the automatic mode."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llm4seg import models
from llm4seg.infer import segment
from llm4seg.interactive import Click, iou, next_click, refine
from llm4seg.io import read_image

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data" / "busi"


@pytest.fixture(scope="module")
def clicks_model():
    return models.load_model("generalist-clicks", device="cpu")


@pytest.fixture(scope="module")
def sample():
    name = "benign (100).png"
    return read_image(SAMPLES / "images" / name).array, read_image(SAMPLES / "masks" / "0" / name).array > 0


def test_the_click_model_is_found_from_any_model_and_takes_prompts(clicks_model):
    assert clicks_model.config.prompts == ("previous", "positive", "negative")
    assert models.click_model_for("busi-lesion") == "generalist-clicks"
    assert models.click_model_for("generalist-clicks") == "generalist-clicks"


def test_no_clicks_is_the_automatic_segmentation(clicks_model, sample):
    image, _ = sample
    np.testing.assert_array_equal(refine(image, clicks_model, []), segment(image, clicks_model, tta=None).labels)


def test_a_positive_click_inside_a_missed_object_adds_it(clicks_model, sample):
    image, truth = sample
    empty = np.zeros(truth.shape, np.uint8)
    click = next_click(empty, truth)  # the centre of the lesion
    mask = refine(image, clicks_model, [click], previous=empty)
    assert mask[int(click.y), int(click.x)] == 1 and iou(mask, truth) > 0.6


def test_a_negative_click_on_a_false_region_removes_it(clicks_model, sample):
    image, truth = sample
    h, w = truth.shape
    cy, cx = np.argwhere(truth).mean(0)
    by, bx = (0.25 * h if cy > h / 2 else 0.75 * h), (0.25 * w if cx > w / 2 else 0.75 * w)  # the opposite quarter
    yy, xx = np.mgrid[:h, :w]
    blob = ((yy - by) ** 2 + (xx - bx) ** 2 < (0.06 * min(h, w)) ** 2) & ~truth
    far = (by, bx)
    previous = (truth | blob).astype(np.uint8)
    mask = refine(image, clicks_model, [Click(float(far[0]), float(far[1]), positive=False)], previous=previous)
    assert mask[blob].mean() < 0.2 and iou(mask, truth) > 0.7
