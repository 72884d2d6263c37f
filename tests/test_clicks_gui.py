"""Correct with clicks in the Segment tab: clicks on a real viewer, undo, edit protection, propagation."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui  # a real viewer: needs a display (xvfb)

from qtpy.QtCore import QSettings  # noqa: E402

from _widget_models import ThresholdModel, disk  # noqa: E402
from _factories import tiny_model  # noqa: E402
from llm4seg.adapt import add_prompt_channels  # noqa: E402
from llm4seg.checkpoint import ModelCard  # noqa: E402
from llm4seg.preprocess import Preprocessing  # noqa: E402
from napari_llm4seg import _clicks_controller, _clicks_panel, _workers  # noqa: E402
from napari_llm4seg._clicks_controller import POINTS_NAME  # noqa: E402
from napari_llm4seg._finetune_pairs import PairsPanel  # noqa: E402
from napari_llm4seg._layers import is_untouched_output  # noqa: E402
from napari_llm4seg._segment_widget import SegmentWidget  # noqa: E402

TIMEOUT = 20_000


class ClickThreshold(ThresholdModel):
    """The threshold stand-in with the ``device`` that ``refine`` asks for (no prompt channels: the
    training-free correction takes the clicks)."""

    @property
    def device(self):
        return self.bias.device


def disk_volume(z: int = 6, h: int = 40, w: int = 48) -> np.ndarray:
    return np.stack([disk(h, w)[0]] * z)


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path):
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    yield


@pytest.fixture(autouse=True)
def _no_click_model(monkeypatch):
    """The stand-in model takes the clicks itself (training-free) unless a test names a click model."""
    monkeypatch.setattr(_clicks_controller, "click_model_for", lambda name: None)


@pytest.fixture
def make_widget(make_napari_viewer, monkeypatch, qtbot):
    """A viewer with the Segment widget docked and ``model`` loaded instead of the default checkpoint."""

    def factory(model=None, show=False):
        model = model if model is not None else ClickThreshold()
        monkeypatch.setattr(_workers, "load_job", lambda name: model)
        viewer = make_napari_viewer(show=show)
        widget = SegmentWidget(viewer)
        viewer.window.add_dock_widget(widget, name="LLM4Seg: Segment")
        qtbot.waitUntil(lambda: not widget.busy and widget.model is model, timeout=TIMEOUT)
        return viewer, widget

    return factory


def segment(qtbot, widget, scope: str = "all") -> None:
    widget.input_panel.scope.setCurrentIndex(widget.input_panel.scope.findData(scope))
    assert widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)


def click(qtbot, widget, image, data_point, positive=True) -> None:
    """A click at ``data_point`` (pixel coordinates of ``image``), waited for."""
    assert widget.clicks.click(image.data_to_world(data_point), positive), widget.clicks.panel.status.text()
    qtbot.waitUntil(lambda: not widget.clicks.busy, timeout=TIMEOUT)


def test_click_on_a_slice_is_one_undo_step_and_touches_no_other_slice(make_widget, qtbot):
    viewer, widget = make_widget()
    image = viewer.add_image(disk_volume(), name="vol", scale=(2.0, 0.5, 0.5), translate=(0, 3, -4))
    segment(qtbot, widget)
    out = viewer.layers["vol labels"]
    ctl = widget.clicks
    assert widget.clicks.panel.model.text() == "threshold (training-free)"
    ctl.panel.toggle_shortcut.activated.emit()  # the K shortcut turns the mode on
    assert ctl.active and ctl._on_mouse in viewer.mouse_drag_callbacks
    points = viewer.layers[POINTS_NAME]
    assert viewer.layers.selection.active is points and points.mode == "pan_zoom"
    viewer.dims.set_current_step(0, 2)
    pairs = PairsPanel(viewer)  # what the Fine-tune tab lists
    assert pairs.pairs() == []  # an uncorrected Segment result does not train
    before = out.data.copy()
    click(qtbot, widget, image, (2, 3, 3))  # background corner: positive adds it
    after = out.data.copy()
    assert after[2, 3, 3] == 1
    changed = np.nonzero((after != before).any(axis=(1, 2)))[0]
    assert list(changed) == [2]  # only the slice shown
    np.testing.assert_array_equal(points.data, [[2, 3, 3]])
    assert "last click:" in ctl.panel.timing.text() and "ms" in ctl.panel.timing.text()
    out.undo()  # one undo step reverts exactly the click
    np.testing.assert_array_equal(out.data, before)
    out.redo()
    np.testing.assert_array_equal(out.data, after)
    # the corrected slice is a user edit: Fine-tune trains on it, a Segment run asks before replacing it
    record = widget.outputs.record_for(image, out.data.shape)
    assert widget.outputs.edited_slices(record) == {2} and not is_untouched_output(out)
    [pair] = pairs.training_pairs()
    assert pair.name == "vol labels ← vol" and list(pair.slices) == [2]
    pairs.detach()
    ctl.panel.toggle.click()
    assert not ctl.active and ctl._on_mouse not in viewer.mouse_drag_callbacks


def test_ctrl_click_on_the_canvas_is_negative_and_a_drag_pans(make_widget, qtbot):
    viewer, widget = make_widget(show=True)
    image = viewer.add_image(disk()[0], name="us")
    segment(qtbot, widget)
    out = viewer.layers["us labels"]
    assert out.data[24, 32] == 1
    widget.clicks.set_active(True)
    viewer.reset_view()
    canvas = viewer.window._qt_viewer.canvas._scene_canvas
    centre = tuple(int(s // 2) for s in canvas.size)
    canvas.events.mouse_press(pos=centre, modifiers=(), button=1)
    canvas.events.mouse_move(pos=(centre[0] + 40, centre[1]), modifiers=(), button=1, press_event=None)
    canvas.events.mouse_release(pos=(centre[0] + 40, centre[1]), modifiers=(), button=1)
    assert not widget.clicks.busy and widget.clicks.steps() == []  # a drag is not a click
    canvas.events.mouse_press(pos=centre, modifiers=("Control",), button=1)
    canvas.events.mouse_release(pos=centre, modifiers=("Control",), button=1)
    qtbot.waitUntil(lambda: not widget.clicks.busy and bool(widget.clicks.steps()), timeout=TIMEOUT)
    [step] = widget.clicks.steps(image)
    assert not step.click.positive and step.z is None
    assert abs(step.click.y - 24) <= 2 and abs(step.click.x - 32) <= 2  # the image centre, in its pixels
    assert out.data[step.click.y, step.click.x] == 0  # removed
    np.testing.assert_allclose(viewer.layers[POINTS_NAME].face_color[0], (1.0, 0.2, 0.9, 1.0))


def test_undo_last_click_and_hand_painted_slices(make_widget, qtbot, monkeypatch):
    viewer, widget = make_widget()
    image = viewer.add_image(disk()[0], name="us")
    ctl = widget.clicks
    ctl.set_active(True)
    click(qtbot, widget, image, (3, 3))  # no result yet: an empty one is made, then corrected
    out = viewer.layers["us labels"]
    first = out.data.copy()
    assert first[3, 3] == 1
    click(qtbot, widget, image, (40, 60))
    assert out.data[40, 60] == 1 and len(ctl.steps()) == 2
    ctl.panel.undo_shortcut.activated.emit()  # Shift+K: undo last click
    np.testing.assert_array_equal(out.data, first)
    assert len(ctl.steps()) == 1 and len(viewer.layers[POINTS_NAME].data) == 1
    out.data_setitem((np.array([20]), np.array([5])), 1)  # the user paints by hand
    painted = out.data.copy()
    asked = []
    monkeypatch.setattr(_clicks_panel, "ask_refine_edited", lambda *a: asked.append(a) or False)
    assert not ctl.click(image.data_to_world((10, 10)))
    assert asked and np.array_equal(out.data, painted) and "kept" in ctl.panel.status.text()
    monkeypatch.setattr(_clicks_panel, "ask_refine_edited", lambda *a: True)
    click(qtbot, widget, image, (10, 10))
    assert out.data[10, 10] == 1 and out.data[20, 5] == 1  # the painting is the starting mask


def test_propagate_fills_neighbours_and_skips_edited_slices(make_widget, qtbot):
    viewer, widget = make_widget()
    image = viewer.add_image(disk_volume(z=7), name="vol")
    viewer.dims.set_current_step(0, 2)
    segment(qtbot, widget, scope="slice")  # only slice 2 has a mask
    out = viewer.layers["vol labels"]
    assert out.data[2].any() and not out.data[[0, 1, 3, 4, 5, 6]].any()
    out.data_setitem((np.array([4]), np.array([0]), np.array([0])), 1)  # slice 4 painted by hand
    pairs = PairsPanel(viewer)  # what the Fine-tune tab lists
    before = out.data.copy()
    ctl = widget.clicks
    assert ctl.panel._volume_row.isVisibleTo(widget)
    assert ctl.propagate()
    assert ctl.busy and not widget.run_button.isEnabled()
    qtbot.waitUntil(lambda: not ctl.busy, timeout=TIMEOUT)
    assert "to 3 slice(s) (0–3)" in ctl.panel.status.text(), ctl.panel.status.text()
    for z in (0, 1, 3):
        np.testing.assert_array_equal(out.data[z], out.data[2])
    np.testing.assert_array_equal(out.data[4:], before[4:])  # protected: never written, and a stop
    record = widget.outputs.record_for(image, out.data.shape)
    assert widget.outputs.edited_slices(record) == {4}  # propagated slices are the model's output
    out.undo()
    np.testing.assert_array_equal(out.data, before)
    pairs.detach()


def test_clicks_refused_with_a_message(make_widget, qtbot):
    viewer, widget = make_widget(ClickThreshold(classes=("background", "liver", "tumour")))
    ctl = widget.clicks
    ctl.set_active(True)
    assert not ctl.click((3, 3)) and "No image" in ctl.panel.status.text()
    assert not ctl.propagate() and "No image" in ctl.panel.status.text()
    image = viewer.add_image(disk()[0], name="us")
    viewer.layers.selection.active = image
    assert not ctl.click(image.data_to_world((3, 3)))
    assert "2 classes" in ctl.panel.status.text() and "us labels" not in viewer.layers
    assert not ctl.propagate() and "volumes" in ctl.panel.status.text()
    assert not ctl.click(image.data_to_world((-30, 3))) and "outside" in ctl.panel.status.text()
    assert not ctl.undo_last() and "No click" in ctl.panel.status.text()
    assert not ctl.panel._volume_row.isVisibleTo(widget)


def test_a_click_model_is_loaded_and_takes_the_clicks(make_widget, qtbot, monkeypatch):
    clicker = add_prompt_channels(tiny_model(seed=2))
    clicker.card = ModelCard(name="clicks", classes=["background", "object"], model=clicker.config.to_dict(),
                             preprocessing=Preprocessing(size=None).to_dict())
    model = ClickThreshold()
    monkeypatch.setattr(_clicks_controller, "click_model_for", lambda name: "generalist-clicks")
    viewer, widget = make_widget(model)
    monkeypatch.setattr(_workers, "load_job", lambda name: clicker if name == "generalist-clicks" else model)
    image = viewer.add_image(disk()[0], name="us")
    ctl = widget.clicks
    assert ctl.panel.model.text() == "generalist-clicks (loading…)"
    ctl.set_active(True)  # starts loading it
    qtbot.waitUntil(lambda: not ctl.busy, timeout=TIMEOUT)
    assert ctl.panel.model.text() == "generalist-clicks"
    click(qtbot, widget, image, (24, 32))
    assert len(ctl.steps(image)) == 1 and "us labels" in viewer.layers
