"""The "LLM4Seg: Segment" widget in a real napari viewer (pytest-qt; run under xvfb)."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui  # a real viewer: needs a display (xvfb)

from napari.layers import Labels  # noqa: E402
from napari.utils.notifications import notification_manager  # noqa: E402
from qtpy.QtCore import QSettings  # noqa: E402

from _factories import tiny_model  # noqa: E402
from _widget_models import ThresholdModel, ct_volume, disk  # noqa: E402
from llm4seg.checkpoint import ModelCard  # noqa: E402
from llm4seg.infer import segment  # noqa: E402
from llm4seg.models import UNTRAINED_NOTE  # noqa: E402
from llm4seg.preprocess import Preprocessing  # noqa: E402
from napari_llm4seg import _output, _workers  # noqa: E402
from napari_llm4seg._layers import PALETTE  # noqa: E402
from napari_llm4seg._segment_widget import SegmentWidget  # noqa: E402

TIMEOUT = 20_000


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path):
    """Settings go to a temporary folder, never to the user's config."""
    fmt, scope = QSettings.Format.IniFormat, QSettings.Scope.UserScope
    QSettings.setPath(fmt, scope, str(tmp_path / "settings"))
    yield


@pytest.fixture
def notes():
    """Notifications shown during the test, as (severity, message) pairs."""
    start = len(notification_manager.records)
    return lambda: [(str(n.severity), str(n.message)) for n in notification_manager.records[start:]]


@pytest.fixture
def make_widget(make_napari_viewer, monkeypatch, qtbot):
    """A viewer with the widget docked and ``model`` loaded instead of the default checkpoint."""

    def factory(model=None, show=False, via_plugin=False):
        model = model if model is not None else ThresholdModel()
        monkeypatch.setattr(_workers, "load_job", lambda name: model)
        viewer = make_napari_viewer(show=show)
        if via_plugin:  # as from the Plugins menu: napari passes a proxy of the viewer
            _, widget = viewer.window.add_plugin_dock_widget("napari-llm4seg", "LLM4Seg: Segment")
        else:
            widget = SegmentWidget(viewer)
            viewer.window.add_dock_widget(widget, name="LLM4Seg: Segment")
        qtbot.waitUntil(lambda: not widget.busy and widget.model is model, timeout=TIMEOUT)
        return viewer, widget

    return factory


def run_and_wait(qtbot, widget, layer=None) -> None:
    assert widget.run(layer)
    assert not widget.run_button.isEnabled() and widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def labels_layers(viewer) -> list[Labels]:
    return [layer for layer in viewer.layers if isinstance(layer, Labels)]


def test_2d_image_gives_labels_with_geometry_and_classes(make_widget, qtbot):
    viewer, widget = make_widget()
    img, mask = disk()
    original = img.copy()
    image = viewer.add_image(img, name="disk", scale=(0.5, 0.7), translate=(3, 4), metadata={"note": "x"})
    run_and_wait(qtbot, widget)
    out = viewer.layers["disk labels"]
    assert isinstance(out, Labels)
    assert out.data.shape == img.shape and out.data.dtype == np.uint8
    np.testing.assert_array_equal(out.data, mask)
    np.testing.assert_allclose(out.scale, (0.5, 0.7))
    np.testing.assert_allclose(out.translate, (3, 4))
    assert list(out.features["class"]) == ["background", "lesion"]
    assert out.metadata["note"] == "x" and out.metadata["llm4seg"]["segmentation"]["classes"][1] == "lesion"
    np.testing.assert_allclose(out.get_color(1)[:3], PALETTE[0], atol=1e-3)
    assert image.data is img and np.array_equal(img, original)  # input untouched
    assert "disk labels" in widget.status.text()


def test_docked_from_the_plugin_menu(make_widget, qtbot):
    viewer, widget = make_widget(via_plugin=True)
    assert isinstance(widget, SegmentWidget)
    img, mask = disk()
    viewer.add_image(img, name="disk")
    assert widget.input_panel.info.text().startswith("48 × 64 uint8")
    run_and_wait(qtbot, widget)
    np.testing.assert_array_equal(viewer.layers["disk labels"].data, mask)
    viewer.layers.remove("disk")
    assert widget.input_layer() is None


def test_rgb_image_and_untrained_card_warning(make_widget, qtbot):
    card_note = ModelCard(name="untrained-default", description=UNTRAINED_NOTE, training={"status": "untrained"})
    model = ThresholdModel()
    model.card.description, model.card.training = card_note.description, card_note.training
    viewer, widget = make_widget(model)
    assert widget.model_panel.warning.isVisibleTo(widget) and "UNTRAINED" in widget.model_panel.warning.text()
    img, mask = disk()
    rgb = np.stack([img, img, img // 2], axis=-1)
    viewer.add_image(rgb, name="rgb", rgb=True)
    assert not widget.input_panel.scope.isEnabled()
    widget.activity.setChecked(True)  # napari's activity-panel progress bar as well
    run_and_wait(qtbot, widget)
    out = viewer.layers["rgb labels"]
    assert out.data.shape == img.shape and out.data.sum() > 0


def test_ct_volume_window_scope_and_real_model(make_widget, qtbot):
    viewer, widget = make_widget(ThresholdModel(window=(60.0, 160.0), classes=("background", "liver")))
    vol, mask = ct_volume(z=6)
    vol[mask.astype(bool)] = 100
    aff = np.eye(4)
    aff[:3, 3] = (10, -5, 2)
    viewer.add_image(vol, name="ct", scale=(2.5, 0.8, 0.8), affine=aff,
                     metadata={"llm4seg": {"affine": np.eye(4).tolist()}})
    panel = widget.input_panel
    assert panel.window.isVisibleTo(widget) and panel.window.currentData() == "liver"
    assert panel.level.value() == 60 and panel.width.value() == 160 and not panel.level.isEnabled()
    panel.window.setCurrentIndex(panel.window.findData("__custom__"))
    panel.level.setValue(50)
    assert panel.level.isEnabled() and panel.window_value() == (50.0, 160.0)
    panel.window.setCurrentIndex(panel.window.findData("liver"))
    panel.scope.setCurrentIndex(panel.scope.findData("range"))
    panel.z0.setValue(1)
    panel.z1.setValue(3)
    run_and_wait(qtbot, widget)
    out = viewer.layers["ct labels"]
    assert out.data.shape == vol.shape and out.data.dtype == np.uint8
    np.testing.assert_allclose(out.scale, (2.5, 0.8, 0.8))
    np.testing.assert_allclose(out.affine.affine_matrix, aff)
    assert out.metadata["llm4seg"]["affine"] == np.eye(4).tolist()
    assert list(out.features["class"]) == ["background", "liver"]
    assert out.data[[0, 4, 5]].sum() == 0 and np.array_equal(out.data[1:4], mask[1:4])
    # current slice only, now with a real (tiny, untrained) LLM4Seg network
    net = tiny_model(seed=1)
    net.card = ModelCard(name="tiny", classes=["background", "liver"], preprocessing=Preprocessing(size=None).to_dict())
    widget.set_model(net, "tiny")
    viewer.dims.set_current_step(0, 5)
    panel.scope.setCurrentIndex(panel.scope.findData("slice"))
    before = out.data.copy()
    run_and_wait(qtbot, widget)
    assert viewer.layers["ct labels"] is out and len(labels_layers(viewer)) == 1
    np.testing.assert_array_equal(out.data[:5], before[:5])  # only slice 5 may change
    assert widget.last_outcome.result.z_range == (5, 6)


def test_cancel_mid_run_leaves_no_layer(make_widget, qtbot, notes):
    model = ThresholdModel(delay=0.3)
    viewer, widget = make_widget(model)
    vol, _ = ct_volume(z=24, h=16, w=16)
    viewer.add_image(vol, name="ct")
    assert widget.run()
    qtbot.waitUntil(lambda: model.batches >= 1, timeout=TIMEOUT)
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)
    assert model.batches < 6  # 24 slices in batches of 4: stopped within one batch
    assert labels_layers(viewer) == [] and "nothing was written" in widget.status.text()
    assert widget.run_button.isEnabled() and widget.bar.progress_bar.value() == 0  # the bar is reset


def test_removing_the_input_while_running_cancels(make_widget, qtbot, notes):
    viewer, widget = make_widget(ThresholdModel(delay=0.2))
    viewer.add_image(ct_volume(z=24, h=16, w=16)[0], name="ct")
    assert widget.run()
    viewer.layers.remove("ct")
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)
    assert labels_layers(viewer) == []
    assert any("removed" in m for _, m in notes())


def test_edited_output_is_not_silently_overwritten(make_widget, qtbot, monkeypatch):
    model = ThresholdModel()
    viewer, widget = make_widget(model)
    img, mask = disk()
    viewer.add_image(img, name="disk")
    run_and_wait(qtbot, widget)
    out = viewer.layers["disk labels"]
    out.data_setitem((np.array([0]), np.array([0])), 1)  # the user paints a pixel
    edited = out.data.copy()
    model.bias.data.fill_(100.0)  # the model would now label everything
    asked = []
    monkeypatch.setattr(_output, "ask_about_edits", lambda *a: asked.append(a) or _output.CANCEL)
    assert not widget.run()
    assert asked and np.array_equal(out.data, edited)
    monkeypatch.setattr(_output, "ask_about_edits", lambda *a: _output.REPLACE)
    run_and_wait(qtbot, widget)
    assert out.data.all() and len(labels_layers(viewer)) == 1
    out.undo()  # one undo step restores the edited labels
    np.testing.assert_array_equal(out.data, edited)


def test_volume_keeps_edited_slices_when_asked(make_widget, qtbot, monkeypatch):
    model = ThresholdModel()
    viewer, widget = make_widget(model)
    vol, mask = ct_volume(z=4, h=16, w=16)
    viewer.add_image(vol, name="ct")
    user_labels = viewer.add_labels(np.zeros(vol.shape, np.uint8), name="mine")
    run_and_wait(qtbot, widget, viewer.layers["ct"])
    out = viewer.layers["ct labels"]
    out.data_setitem((np.array([2]), np.array([0]), np.array([0])), 1)
    edited_slice = out.data[2].copy()
    model.bias.data.fill_(100.0)
    monkeypatch.setattr(_output, "ask_about_edits", lambda *a: _output.UNEDITED)
    run_and_wait(qtbot, widget, viewer.layers["ct"])
    assert out.data[[0, 1, 3]].all() and np.array_equal(out.data[2], edited_slice)
    assert "1 edited slice" in widget.status.text()
    assert not user_labels.data.any()  # a labels layer we did not create is never touched


def test_postprocessing_preview_updates_result(make_widget, qtbot):
    viewer, widget = make_widget()
    img, mask = disk()
    img[2:4, 2:4] = 200  # a speck the model labels too
    viewer.add_image(img, name="disk")
    run_and_wait(qtbot, widget)
    out = viewer.layers["disk labels"]
    assert out.data[2, 2] == 1
    widget.post_panel.min_size.setValue(10)
    qtbot.waitUntil(lambda: out.data[2, 2] == 0, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)
    np.testing.assert_array_equal(out.data, mask)
    out.undo()
    assert out.data[2, 2] == 1


def test_errors_become_notifications(make_widget, qtbot, notes):
    viewer, widget = make_widget()
    assert not widget.run()  # no image at all
    points = viewer.add_points(np.zeros((1, 2)))
    assert not widget.run(points)
    viewer.add_image(np.zeros((2, 3, 16, 16), np.uint8), name="4d")
    assert "time series" in widget.input_panel.info.text()
    viewer.dims.order = (2, 3, 0, 1)  # time and z on the canvas: no single time point is shown
    assert not widget.run()
    messages = " ".join(m for _, m in notes())
    assert "Nothing to segment" in messages and "Points layer" in messages and "time point" in messages
    assert widget.run_button.isEnabled() and labels_layers(viewer) == []


def test_device_fallback_is_notified(make_widget, qtbot, notes, monkeypatch):
    import llm4seg.device
    import torch

    monkeypatch.setattr(llm4seg.device, "available_devices", lambda: ["cuda:0", "cpu"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    viewer, widget = make_widget()
    widget.model_panel.device.setCurrentText("cuda:0")
    assert "fallback" in widget.model_panel.device_used.text()
    viewer.add_image(disk()[0], name="disk")
    run_and_wait(qtbot, widget)
    assert widget.last_outcome.device == "cpu" and "disk labels" in viewer.layers
    assert any(sev == "warning" and "CUDA" in m and "CPU" in m for sev, m in notes())


def test_follows_selection_shortcut_and_settings(make_widget, qtbot):
    viewer, widget = make_widget()
    viewer.add_image(disk()[0], name="a")
    viewer.add_image(disk()[0], name="b")
    viewer.layers.selection.active = viewer.layers["a"]
    assert widget.input_layer() is viewer.layers["a"]
    widget.shortcut.activated.emit()
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)
    assert "a labels" in viewer.layers
    widget.post_panel.largest.setChecked(True)
    widget.post_panel.min_size.setValue(25)
    widget.model_panel.device.setCurrentText("cpu")
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)
    again = SegmentWidget(viewer)
    viewer.window.add_dock_widget(again, name="second")
    qtbot.waitUntil(lambda: not again.busy, timeout=TIMEOUT)
    opts = again.post_panel.options()
    assert opts.largest and opts.min_size == 25 and again.model_panel.device.currentText() == "cpu"
    from qtpy.QtWidgets import QAbstractButton, QAbstractSpinBox, QComboBox

    controls = [w for cls in (QAbstractButton, QAbstractSpinBox, QComboBox) for w in widget.findChildren(cls)]
    assert controls and all(w.toolTip() for w in controls), [w for w in controls if not w.toolTip()]


def test_screenshot_shows_the_labels(make_widget, qtbot):
    viewer, widget = make_widget(show=True)
    img, _ = disk(96, 128, value=160)
    viewer.add_image(img, name="disk")
    run_and_wait(qtbot, widget)
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False).astype(int)
    reddish = (shot[..., 0] - shot[..., 1] > 80) & (shot[..., 0] - shot[..., 2] > 40)
    assert reddish.sum() > 200, "the label colour is not visible on the canvas"
    viewer.layers["disk labels"].visible = False
    shot = viewer.screenshot(canvas_only=True, flash=False).astype(int)
    assert ((shot[..., 0] - shot[..., 1]) > 80).sum() == 0


def test_checkpoint_browse_recent_and_load_error(make_widget, qtbot, notes, monkeypatch, tmp_path):
    from qtpy.QtWidgets import QFileDialog

    viewer, widget = make_widget()
    first = widget.model
    good, bad = tmp_path / "tuned.safetensors", tmp_path / "broken.safetensors"
    good.write_bytes(b"x")
    tuned = ThresholdModel(classes=("background", "tumour"))

    def load(name):
        if name == str(bad):
            raise ValueError("broken.safetensors has no llm4seg model card in its metadata")
        return tuned

    monkeypatch.setattr(_workers, "load_job", load)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(good), ""))
    widget.model_panel.checkpointRequested.emit("__browse__")
    qtbot.waitUntil(lambda: widget.model is tuned, timeout=TIMEOUT)
    assert widget.model_panel.current() == str(good) and "tumour" in widget.model_panel.card.text()
    assert widget.settings.get("recent", []) == [str(good)] and widget.settings.get("checkpoint", "") == str(good)
    widget.load_checkpoint(str(bad))
    assert not widget.run_button.isEnabled()  # disabled while loading
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)
    assert widget.model is tuned and widget.model is not first and widget.run_button.isEnabled()
    assert any(sev == "error" and "no llm4seg model card" in m for sev, m in notes())


def test_layer_layouts_and_geometry():
    from napari.layers import Image, Points

    from napari_llm4seg._layers import labels_kwargs, layer_layout, spatial_shape

    cases = {(16, 16): (False, "2d"), (16, 16, 3): (True, "2d-rgb"), (4, 16, 16): (False, "3d"),
             (4, 16, 16, 4): (True, "3d-rgb")}
    for shape, (rgb, layout) in cases.items():
        layer = Image(np.zeros(shape, np.uint8), rgb=rgb)
        assert layer_layout(layer) == layout and spatial_shape(layer) == (shape[:-1] if rgb else shape)
    with pytest.raises(ValueError, match="Points layer"):
        layer_layout(Points(np.zeros((1, 2))))
    image = Image(np.zeros((4, 16, 16, 3), np.uint8), rgb=True, scale=(3, 2, 1), translate=(1, 2, 3),
                  rotate=90, units=("mm", "mm", "mm"), axis_labels=("z", "y", "x"))
    kw = labels_kwargs(image, ["background", "a", "b"], {"x": 1})
    assert tuple(kw["scale"]) == (3, 2, 1) and kw["units"] == image.units and kw["axis_labels"] == ("z", "y", "x")
    np.testing.assert_allclose(kw["rotate"], image.rotate)
    assert kw["name"] == f"{image.name} labels"
    assert set(kw["colormap"]) == {None, 0, 1, 2} and kw["colormap"][0][3] == 0


def test_test_time_augmentation_is_passed_to_the_run(make_widget, qtbot, monkeypatch):
    model = tiny_model(seed=3)
    model.card = ModelCard(name="tiny", classes=["background", "lesion"], model=model.config.to_dict(),
                           preprocessing=Preprocessing(size=32).to_dict())
    viewer, widget = make_widget(model.eval())
    import llm4seg.jobs

    seen = []
    real = llm4seg.jobs.iter_segment
    monkeypatch.setattr(llm4seg.jobs, "iter_segment", lambda *a, **kw: seen.append(kw.get("tta")) or real(*a, **kw))
    img = disk()[0]
    viewer.add_image(img, name="disk")
    run_and_wait(qtbot, widget)
    widget.input_panel.tta.setCurrentIndex(widget.input_panel.tta.findData("d4"))
    run_and_wait(qtbot, widget)
    assert seen == ["auto", "d4"]  # auto by default: flips only for weights trained with them (not this card)
    np.testing.assert_array_equal(viewer.layers["disk labels"].data, segment(img, model, tta="d4").labels)
    assert "with 8 test-time symmetries" in widget.status.text()


def test_volume_only_controls_hide_for_2d_images(make_widget, qtbot):
    viewer, widget = make_widget(show=True)
    viewer.add_image(disk()[0], name="flat")
    post, inp = widget.post_panel, widget.input_panel
    assert not post.mode.isVisible() and not inp._dash.isVisible() and not inp.scope.isEnabled()
    viewer.add_image(ct_volume()[0], name="ct")
    assert post.mode.isVisible() and inp.scope.isEnabled() and not inp._dash.isVisible()
    inp.scope.setCurrentIndex(inp.scope.findData("range"))
    assert inp._dash.isVisible() and inp.z0.isVisible()


def test_the_model_hint_line_follows_the_input_layer(make_widget):
    viewer, widget = make_widget(ThresholdModel())
    frame = np.zeros((60, 70, 3), np.uint8)
    frame[8:52, 10:60] = (190, 70, 50)  # a colonoscopy frame: black border, red mucosa
    viewer.add_image(frame, name="frame", rgb=True)
    hint = widget.model_panel.hint
    assert hint.text().startswith("Colonoscopy frame: polyp fits it") and hint.styleSheet()
    viewer.add_image(np.full((4, 16, 16), -1000, np.int16), name="ct")
    assert hint.text().startswith("CT volume: ct-liver fits it")


def test_the_last_sessions_model_is_kept_only_when_it_fits_the_image(make_widget, qtbot, monkeypatch, notes):
    from napari_llm4seg._settings import WidgetSettings

    stored = WidgetSettings("segment")
    stored.set("checkpoint", "ct-liver")  # a CT session last time
    stored.sync()
    loaded: list[str] = []
    viewer, widget = make_widget(ThresholdModel())
    monkeypatch.setattr(_workers, "load_named", lambda name: (loaded.append(name), (name, widget.model))[1])
    assert widget.model_name == "ct-liver"
    viewer.add_image(np.zeros((40, 50), np.uint8), name="ultrasound")  # the threshold model does not fit it
    qtbot.waitUntil(lambda: loaded == ["default"] and not widget.busy, timeout=TIMEOUT)
    assert widget.model_name == "default" and any("does not fit this image" in m for _, m in notes())
    viewer.add_image(np.zeros((30, 30), np.uint8), name="another")  # decided once: nothing else is loaded
    assert loaded == ["default"]
