"""Segmentation of 2D images and volumes: shapes, dtypes, batching, z-range, cancel."""
from __future__ import annotations

import numpy as np
import pytest

from _factories import disk_image, tiny_model
from llm4seg.events import CancelToken, Cancelled, JobCancelled, Progress, run_to_end
from llm4seg.infer import image_layout, iter_segment, segment


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.mark.parametrize("shape,dtype", [((37, 53), np.uint8), ((64, 48, 3), np.uint8), ((40, 40, 4), np.uint8),
                                         ((50, 70), np.uint16), ((33, 33), np.float64), ((5, 40, 30), np.int16)])
def test_output_has_input_spatial_shape(model, shape, dtype):
    img = (np.random.default_rng(0).random(shape) * 200).astype(dtype)
    res = segment(img, model)
    spatial = shape[:2] if image_layout(img) == "2d-rgb" else shape
    assert res.labels.shape == spatial and res.labels.dtype == np.uint8
    assert set(np.unique(res.labels)) <= {0, 1}


def test_batches_do_not_change_the_result(model):
    vol = np.stack([disk_image(48, 48, seed=i)[0] for i in range(5)])
    a = segment(vol, model, batch_size=1, return_probs=True)
    b = segment(vol, model, batch_size=4, return_probs=True)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
    assert a.probs.shape == vol.shape and a.layout == "3d"


def test_z_range_only_fills_those_slices(model):
    vol = np.stack([disk_image(32, 32, seed=i)[0] for i in range(6)])
    full = segment(vol, model, return_probs=True)
    part = segment(vol, model, z_range=(2, 4), return_probs=True)
    assert part.z_range == (2, 4)
    assert not part.probs[[0, 1, 4, 5]].any() and not part.labels[[0, 1, 4, 5]].any()
    direct = segment(vol[2:4], model, return_probs=True)  # the same slices segmented on their own
    np.testing.assert_array_equal(part.labels[2:4], direct.labels)
    np.testing.assert_allclose(part.probs[2:4], direct.probs, atol=1e-5)
    np.testing.assert_array_equal(part.labels[2:4], full.labels[2:4])  # uint8: one intensity range for both


def test_progress_and_cancel(model):
    vol = np.zeros((10, 32, 32), np.uint8)
    events: list = []
    result = run_to_end(iter_segment(vol, model, batch_size=3), events.append)
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].done == progress[-1].total == 10 and events[-1] is progress[-1]  # the result comes once:
    assert result.labels.shape == vol.shape                                               # as the return value
    token = CancelToken()
    gen = iter_segment(vol, model, batch_size=3, cancel=token)
    next(gen)
    token.cancel()
    rest: list = []
    assert run_to_end(gen, rest.append) is None and isinstance(rest[-1], Cancelled)
    with pytest.raises(JobCancelled):
        segment(vol, model, cancel=lambda: True)


def test_multiclass_probs(model):
    m = tiny_model(num_classes=3)
    res = segment(np.zeros((2, 32, 32), np.uint8), m, return_probs=True)
    assert res.probs.shape == (3, 2, 32, 32)
    np.testing.assert_allclose(res.probs.sum(0), 1, atol=1e-5)


def test_unsupported_layouts_are_explained(model):
    with pytest.raises(ValueError, match="time point"):
        segment(np.zeros((2, 3, 16, 16), np.uint8), model)
    with pytest.raises(ValueError, match="z-range"):
        segment(np.zeros((4, 16, 16), np.uint8), model, z_range=(3, 3))


def test_test_time_augmentation_averages_symmetric_views(model):
    img, _ = disk_image(32, 32)
    plain = segment(img, model, return_probs=True, fast=False)
    flips = segment(img, model, return_probs=True, fast=False, tta="flips")
    d4 = segment(img, model, return_probs=True, fast=False, tta="d4")
    assert flips.labels.shape == d4.labels.shape == plain.labels.shape
    views = [plain.probs, segment(img[:, ::-1].copy(), model, return_probs=True, fast=False).probs[:, ::-1],
             segment(img[::-1].copy(), model, return_probs=True, fast=False).probs[::-1]]
    np.testing.assert_allclose(flips.probs, np.mean(views, axis=0), atol=1e-4)  # the mean of the three views
    # d4 is invariant to the symmetries it averages: a rotated image gives the rotated probabilities
    turned = segment(np.rot90(img).copy(), model, return_probs=True, fast=False, tta="d4").probs
    np.testing.assert_allclose(turned, np.rot90(d4.probs), atol=1e-4)
    with pytest.raises(ValueError, match="tta must be one of"):
        segment(img, model, tta="spin")


def test_test_time_augmentation_warns_on_a_model_fine_tuned_without_flips(model):
    import copy

    from llm4seg.checkpoint import ModelCard
    from llm4seg.events import Log

    img, _ = disk_image(32, 32)
    tuned = copy.deepcopy(model)
    tuned.card = ModelCard(classes=["background", "foreground"],
                           training={"kind": "fine-tune", "config": {"augment": False}})

    def warnings(m, tta):
        events = []
        run_to_end(iter_segment(img, m, tta=tta), events.append)
        return [e.text for e in events if isinstance(e, Log) and e.level == "warning"]
    assert any("without flips" in w for w in warnings(tuned, "flips"))
    assert not warnings(tuned, None)  # no augmentation asked: nothing to warn about
    assert not warnings(model, "flips")  # nothing known against it


def test_auto_test_time_augmentation_follows_how_the_weights_trained(model):
    import copy

    from llm4seg.checkpoint import ModelCard
    from llm4seg.infer import resolve_tta

    img, _ = disk_image(32, 32)
    flipped = copy.deepcopy(model)
    flipped.card = ModelCard(classes=["background", "foreground"], training={"config": {"augment": True}})
    quick = {"kind": "fine-tune", "steps": 100, "config": {"augment": False},
             "base_training": {"config": {"augment": True}}}
    assert resolve_tta("auto", flipped.card) == "flips"
    assert resolve_tta("auto", ModelCard(training=quick)) is None  # learnt the orientation of its images
    assert resolve_tta("auto", ModelCard(training=dict(quick, steps=0))) == "flips"  # kept the start's weights
    assert resolve_tta("auto", ModelCard()) is None  # no record: no augmentation
    assert resolve_tta("d4", ModelCard(training=quick)) == "d4"  # an explicit choice stays
    auto = segment(img, flipped, return_probs=True, fast=False, tta="auto")
    flips = segment(img, flipped, return_probs=True, fast=False, tta="flips")
    assert auto.tta == flips.tta == "flips"
    np.testing.assert_allclose(auto.probs, flips.probs, atol=1e-6)
    assert segment(img, flipped, fast=False).tta is None
