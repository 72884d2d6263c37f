"""The Segment widget given wrong or awkward input, failing models and checkpoints: it refuses or copes, says
what happened and what to do, re-enables its buttons and never changes the user's layers."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui  # a real viewer: needs a display (xvfb)

import torch  # noqa: E402
from napari.layers import Image, Labels  # noqa: E402

from _factories import tiny_model  # noqa: E402
from _widget_models import ThresholdModel, ct_volume, disk  # noqa: E402
from llm4seg.checkpoint import ModelCard  # noqa: E402
from llm4seg.preprocess import Preprocessing  # noqa: E402
from napari_llm4seg import _workers  # noqa: E402
from napari_llm4seg._segment_panels import BROWSE  # noqa: E402
from test_segment_widget import (  # noqa: E402,F401 - shared fixtures
    TIMEOUT, _isolated_settings, labels_layers, make_widget, notes, run_and_wait,
)

REAL_LOAD = _workers.load_job


def wait_idle(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_labels_points_shapes_are_refused(make_widget, qtbot, notes):
    viewer, widget = make_widget()
    img, mask = disk()
    mine = viewer.add_labels(mask.copy(), name="mask")
    assert not widget.run()  # only a Labels layer, and it is selected
    image = viewer.add_image(img, name="scan")
    points = viewer.add_points(np.zeros((1, 2)), name="pts")
    shapes = viewer.add_shapes([np.array([[0, 0], [5, 5], [0, 5]])], shape_type="polygon", name="roi")
    combo = widget.input_panel.layer
    assert [combo.itemText(i) for i in range(combo.count())] == ["scan"]
    for layer in (mine, points, shapes):  # making another layer active keeps the image as input
        viewer.layers.selection.active = layer
        assert widget.input_layer() is image
        assert not widget.run(layer)  # forced programmatically
    # the image is replaced by a Labels layer of the same name
    viewer.layers.remove(image)
    viewer.add_labels(np.zeros(img.shape, np.uint8), name="scan")
    assert widget.input_layer() is None and combo.count() == 0
    assert not widget.run()
    wait_idle(qtbot, widget)
    assert widget.status.text().startswith("Nothing to segment")  # said in the widget too, not only a pop-up
    messages = notes()
    for name in ("mask", "scan"):
        assert ("warning", "Nothing to segment: open an image (File > Open, or File > Open Sample > LLM4Seg) and "
                f"select it in the layer list. The selected layer {name!r} is a Labels layer; LLM4Seg segments "
                "images.") in messages
    for name, kind in (("mask", "Labels"), ("pts", "Points"), ("roi", "Shapes")):
        assert ("error", f"LLM4Seg: layer {name!r} is a {kind} layer: LLM4Seg segments Image layers. Select an image "
                "(2D, RGB or a Z×H×W volume) in the layer list or the Image box as input.") in messages
    assert [layer.name for layer in viewer.layers] == ["mask", "pts", "roi", "scan"]
    np.testing.assert_array_equal(mine.data, mask)


def test_layer_replaced_in_place_leaves_the_choice(qtbot):
    """``layers[i] = other`` emits neither inserted nor removed (a model-only viewer: napari's canvas does not
    support it); the choice drops the old layer and reports it as removed."""
    from napari.components import ViewerModel
    from qtpy.QtWidgets import QComboBox

    from napari_llm4seg._layer_choice import LayerChoice

    viewer, combo = ViewerModel(), QComboBox()
    qtbot.addWidget(combo)
    image = viewer.add_image(np.zeros((8, 8), np.uint8), name="scan")
    choice = LayerChoice(viewer, combo)
    removed = []
    choice.removed.connect(removed.append)
    assert choice.layer() is image
    viewer.layers[0] = Labels(np.zeros((8, 8), np.uint8), name="scan")
    assert choice.layer() is None and combo.count() == 0 and removed == [image]
    viewer.layers[0] = replacement = Image(np.zeros((8, 8), np.uint8), name="scan")
    assert choice.layer() is replacement
    replacement.name = "renamed"  # name events of the new layer are followed
    assert combo.currentText() == "renamed"
    choice.detach()


def test_4d_layer_segments_the_shown_time_point(make_widget, qtbot, notes):
    viewer, widget = make_widget()
    img, mask = disk(32, 32)
    data = np.full((3, 4, 32, 32), 30, np.uint8)  # (T, Z, Y, X); only t = 1 shows the disk
    data[1] = img
    viewer.add_image(data, name="movie", scale=(1, 2, 0.5, 0.5))
    assert "time point or channel shown" in widget.input_panel.info.text()
    assert widget.input_panel.z1.maximum() == 3  # the z-range is along Z, not T
    viewer.dims.set_current_step(0, 1)
    run_and_wait(qtbot, widget)
    out = viewer.layers["movie labels"]
    assert out.data.shape == data.shape and np.allclose(out.scale, (1, 2, 0.5, 0.5))
    assert all(np.array_equal(out.data[1, z], mask) for z in range(4)) and out.data[[0, 2]].sum() == 0
    assert "at axis 0 = 1" in widget.status.text() and "new layer 'movie labels'" in widget.status.text()
    assert ("info", "LLM4Seg: 'movie' has time / channel axes; segmenting the time point / channel shown in the "
            "viewer (axis 0 = 1). Move the slider and segment again for another one.") in notes()
    # another time point, current slice only: written into the same layer
    data[2] = 200
    widget.input_panel.scope.setCurrentIndex(widget.input_panel.scope.findData("slice"))
    viewer.dims.set_current_step(0, 2)
    viewer.dims.set_current_step(1, 3)
    before = out.data.copy()
    run_and_wait(qtbot, widget)
    assert len(labels_layers(viewer)) == 1 and out.data[2, 3].all()
    assert out.data[2, :3].sum() == 0 and np.array_equal(out.data[:2], before[:2])
    # channels with named axes: the name is used
    chans = viewer.add_image(np.stack([data[0], data[1]]), name="chans", axis_labels=("c", "z", "y", "x"))
    widget.input_panel.scope.setCurrentIndex(0)
    viewer.dims.set_current_step(0, 1)
    run_and_wait(qtbot, widget, chans)
    assert "'chans' at c = 1" in widget.status.text() and viewer.layers["chans labels"].data[1].any()
    # time on the canvas (dims rolled): no single time point is shown, so it is refused
    viewer.dims.order = (2, 3, 0, 1)
    assert not widget.run(chans)
    assert any(sev == "error" and "no single time point or channel is shown" in m for sev, m in notes())
    viewer.dims.order = (0, 1, 2, 3)
    # post-processing preview: each time point on its own, one undo step like a run
    viewer.layers.selection.active = viewer.layers["movie"]
    widget.post_panel.min_size.setValue(10_000)
    qtbot.waitUntil(lambda: out.data.sum() == 0, timeout=TIMEOUT)
    wait_idle(qtbot, widget)
    out.undo()
    assert out.data[2, 3].all()
    out.undo()
    np.testing.assert_array_equal(out.data, before)


def test_image_smaller_than_16_px_is_segmented(make_widget, qtbot):
    viewer, widget = make_widget()
    img = np.full((10, 12), 30, np.uint8)
    img[3:7, 4:9] = 200
    viewer.add_image(img, name="tiny")
    run_and_wait(qtbot, widget)  # padded to 16 px for the network, cropped back
    np.testing.assert_array_equal(viewer.layers["tiny labels"].data, img > 127)
    for size in (None, 64):  # a real network: padded (size None) or resized (size 64) and mapped back
        net = tiny_model(seed=1)
        prep = Preprocessing(size=size).to_dict()
        net.card = ModelCard(name="tiny", classes=["background", "lesion"], preprocessing=prep)
        widget.set_model(net, f"tiny-{size}")
        for layer in (viewer.add_image(img[:3, :5], name=f"3x5 {size}"), viewer.add_image(np.stack([img] * 2))):
            run_and_wait(qtbot, widget, layer)
            assert viewer.layers[f"{layer.name} labels"].data.shape == layer.data.shape


def test_input_removed_while_running(make_widget, qtbot, notes):
    model = ThresholdModel(delay=0.15)
    viewer, widget = make_widget(model)
    vol = ct_volume(z=16, h=16, w=16)[0]
    viewer.add_image(vol, name="ct")
    assert widget.run()
    qtbot.waitUntil(lambda: model.batches >= 1, timeout=TIMEOUT)
    viewer.layers.remove("ct")
    wait_idle(qtbot, widget)
    assert labels_layers(viewer) == [] and model.batches < 4
    assert ("warning", "LLM4Seg: segmentation stopped (its input layer 'ct' was removed); nothing was written.") \
        in notes()
    assert widget.status.text() == "Segmentation stopped (its input layer 'ct' was removed): nothing was written."
    model.delay = 0
    viewer.add_image(vol, name="ct")
    run_and_wait(qtbot, widget)  # a new layer of that name segments normally
    assert [layer.name for layer in labels_layers(viewer)] == ["ct labels"]


def test_input_changing_shape_while_running_discards_the_result(make_widget, qtbot, notes):
    model = ThresholdModel(delay=0.15)
    viewer, widget = make_widget(model)
    vol = ct_volume(z=16, h=16, w=16)[0]
    layer = viewer.add_image(vol, name="ct")
    assert widget.run()
    qtbot.waitUntil(lambda: model.batches >= 1, timeout=TIMEOUT)
    layer.data = vol[:8]  # e.g. a plugin or a script replaced the volume by a crop
    wait_idle(qtbot, widget)
    assert labels_layers(viewer) == []
    assert ("warning", "LLM4Seg: the data of 'ct' changed shape during the run; the result was discarded. Segment "
            "it again.") in notes()
    assert widget.status.text() == "Input changed shape: nothing was written." and widget.run_button.isEnabled()
    model.delay = 0
    run_and_wait(qtbot, widget)  # the new data segments normally
    assert viewer.layers["ct labels"].data.shape == (8, 16, 16)


@pytest.mark.parametrize("error", [RuntimeError("kernel failed on this input"), MemoryError()])
def test_failing_model_becomes_a_notification(make_widget, qtbot, notes, error):
    model = ThresholdModel()
    viewer, widget = make_widget(model)
    img, mask = disk()
    viewer.add_image(img, name="disk")

    def fail(x):
        raise error

    model.forward = fail
    assert widget.run()
    wait_idle(qtbot, widget)
    assert labels_layers(viewer) == []
    errors = [m for sev, m in notes() if sev == "error"]
    what = ("Not enough memory: segment a smaller scope (current slice or a z-range), choose the CPU device or close "
            "other programs, then segment again." if isinstance(error, MemoryError) else
            "Check the input image and the checkpoint (or choose the CPU device), then segment again.")
    detail = ("out of memory on cpu even one item at a time (segmenting)" if isinstance(error, MemoryError)
              else "RuntimeError: kernel failed on this input")  # memory: batches halved down to one first
    assert errors == [f"LLM4Seg: segmenting 'disk' failed ({detail}). Nothing was written. {what}"]
    del model.forward  # the model works again: the viewer and the widget are still usable
    run_and_wait(qtbot, widget)
    np.testing.assert_array_equal(viewer.layers["disk labels"].data, mask)
    # writing the result fails (e.g. no memory for the output): nothing changes, a notification says so
    widget.outputs.write = lambda *a, **k: (_ for _ in ()).throw(MemoryError())
    model.bias.data.fill_(100.0)
    run_and_wait(qtbot, widget)
    np.testing.assert_array_equal(viewer.layers["disk labels"].data, mask)
    assert any(m.startswith("LLM4Seg could not add the segmentation of 'disk' to the viewer (MemoryError). Not "
                            "enough memory") for m in [m for sev, m in notes() if sev == "error"])


def test_failing_checkpoint_keeps_the_model_in_use(make_widget, qtbot, notes, monkeypatch, tmp_path):
    from qtpy.QtWidgets import QFileDialog

    viewer, widget = make_widget()
    first, panel = widget.model, widget.model_panel
    pickle_file, garbage = tmp_path / "weights.pt", tmp_path / "garbage.safetensors"
    torch.save({"w": torch.zeros(2)}, pickle_file)
    garbage.write_bytes(b"not a checkpoint" * 8)
    monkeypatch.setattr(_workers, "load_job", REAL_LOAD)
    for path, why in ((pickle_file, "pickle"), (garbage, "safetensors")):
        monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, p=path, **k: (str(p), ""))
        panel.checkpointRequested.emit(BROWSE)
        assert not widget.run_button.isEnabled()  # disabled while loading
        wait_idle(qtbot, widget)
        assert widget.model is first and panel.current() == "default" and "threshold" in panel.card.text()
        message = [m for sev, m in notes() if sev == "error"][-1]
        assert message.startswith(f"LLM4Seg could not load checkpoint {str(path)!r}: ")
        assert why in message.lower() and message.endswith("The model in use is still 'default'.")
    assert widget.settings.get("recent", []) == [] and widget.settings.get("checkpoint", "") == "default"
    viewer.add_image(disk()[0], name="disk")
    run_and_wait(qtbot, widget)
    assert widget.last_outcome.result is not None


def test_set_model_clears_loading_and_lists_in_memory_models(make_widget, qtbot, monkeypatch):
    import time

    viewer, widget = make_widget()
    default, tuned, late = widget.model, ThresholdModel(classes=("background", "tumour")), ThresholdModel()
    monkeypatch.setattr(_workers, "load_job", lambda name: time.sleep(0.5) or (late if name == "slow" else default))
    widget.load_checkpoint("slow")
    assert widget.busy
    widget.set_model(tuned, "fine-tuned threshold")
    assert not widget.busy and widget.run_button.isEnabled()
    panel = widget.model_panel
    assert panel.checkpoint.currentText() == "fine-tuned threshold (in memory)"
    assert panel.current() == "fine-tuned threshold" and "tumour" in panel.card.text()
    qtbot.wait(900)  # the superseded load finishes and is dropped
    assert widget.model is tuned and not widget.busy
    assert widget.settings.get("checkpoint", "") == "default"  # an in-memory model cannot be reopened
    panel.checkpointRequested.emit("default")
    qtbot.waitUntil(lambda: widget.model is default and not widget.busy, timeout=TIMEOUT)
    assert panel.current() == "default"
    panel.checkpointRequested.emit("fine-tuned threshold")  # back to the in-memory model, no loading
    assert widget.model is tuned and not widget.busy
    widget.set_model(ThresholdModel(), "another")  # one in-memory entry at a time
    texts = [panel.checkpoint.itemText(i) for i in range(panel.checkpoint.count())]
    assert "another (in memory)" in texts and "fine-tuned threshold (in memory)" not in texts


def test_cancel_and_failure_leave_layers_untouched_and_undo_restores(make_widget, qtbot, notes):
    model = ThresholdModel(delay=0.1)
    viewer, widget = make_widget(model)
    vol, mask = ct_volume(z=12, h=16, w=16)
    vol[mask.astype(bool)] = 100
    image = viewer.add_image(vol, name="ct")
    mine = viewer.add_labels(np.full(vol.shape, 3, np.uint8), name="my labels")
    originals = vol.copy(), mine.data.copy()

    def cancelled_and_failed_runs() -> None:
        assert widget.run(image)
        qtbot.waitUntil(lambda: model.batches >= 1, timeout=TIMEOUT)
        widget.cancel()
        wait_idle(qtbot, widget)
        model.forward = lambda x: (_ for _ in ()).throw(RuntimeError("broken"))
        assert widget.run(image)
        wait_idle(qtbot, widget)
        del model.forward

    cancelled_and_failed_runs()
    assert labels_layers(viewer) == [mine]  # no partial layer
    run_and_wait(qtbot, widget, image)
    out = viewer.layers["ct labels"]
    first = out.data.copy()
    model.bias.data.fill_(100.0)  # the re-run labels everything
    run_and_wait(qtbot, widget, image)
    assert out.data.all() and "(Ctrl+Z on it undoes)" in widget.status.text()
    out.undo()  # the layer's own undo: one step restores the previous mask
    np.testing.assert_array_equal(out.data, first)
    out.redo()
    second = out.data.copy()
    cancelled_and_failed_runs()
    np.testing.assert_array_equal(out.data, second)  # a cancelled or failed re-run changes nothing
    assert labels_layers(viewer) == [mine, out]
    assert image.data is vol and np.array_equal(vol, originals[0]) and np.array_equal(mine.data, originals[1])
    assert sum("nothing was written" in m.lower() for _, m in notes()) >= 4


def test_image_and_model_of_different_modalities_warn(make_widget, qtbot, notes):
    viewer, widget = make_widget()  # a model without a CT window, like the ultrasound default
    img, _ = disk()
    viewer.add_image(img.astype(np.uint8), name="us")
    assert widget.run()
    wait_idle(qtbot, widget)
    assert not [text for _, text in notes() if "looks like CT" in text or "Hounsfield" in text]
    viewer.add_image(ct_volume()[0], name="ct")
    assert widget.run()
    wait_idle(qtbot, widget)
    assert [t for level, t in notes() if level == "warning" and "'ct' looks like CT" in t and "'ct-liver'" in t]
    viewer.add_image(np.stack([img, img // 2, 255 - img], axis=-1).astype(np.uint8), name="colour", rgb=True)
    assert widget.run()
    wait_idle(qtbot, widget)
    assert [t for level, t in notes() if level == "warning" and "'colour' is a colour image" in t and "gray" in t
            and "Choose 'isic-lesion' (dermoscopy)" in t]  # the one model that fits, not every colour model
    viewer2, ct_widget = make_widget(ThresholdModel(window=(40.0, 400.0)))
    viewer2.add_image(img.astype(np.uint8), name="us2")
    assert ct_widget.run()
    wait_idle(qtbot, ct_widget)
    assert [t for level, t in notes() if level == "warning" and "trained on CT" in t and "'us2'" in t]


def test_very_large_image_is_downscaled_and_says_so(make_widget, qtbot, notes):
    viewer, widget = make_widget()
    img = np.zeros((5000, 4200), np.uint8)
    img[1000:4000, 1200:3000] = 200
    viewer.add_image(img, name="huge")
    assert widget.run()
    wait_idle(qtbot, widget)
    assert [t for level, t in notes() if level == "info" and "'huge'" in t and "downscaled ×3" in t]
    out = viewer.layers["huge labels"]
    assert out.data.shape == img.shape and out.data[2500, 2000] == 1 and out.data[100, 100] == 0
