"""The "LLM4Seg: Fine-tune" widget in a real napari viewer (pytest-qt; run under xvfb)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.gui  # a real viewer: needs a display (xvfb)

from napari.utils.notifications import notification_manager  # noqa: E402
from qtpy.QtCore import QSettings, Qt  # noqa: E402
from qtpy.QtWidgets import QAbstractButton, QAbstractSpinBox, QComboBox, QFileDialog, QListWidget  # noqa: E402

from _factories import disk_image, tiny_model, trained_tiny  # noqa: E402
from llm4seg.crosscheck import MIN_ITEMS  # noqa: E402
from llm4seg.finetune import TrainingPair  # noqa: E402
from _widget_models import ct_volume  # noqa: E402
from llm4seg.checkpoint import ModelCard, load_checkpoint, read_card  # noqa: E402
from llm4seg.preprocess import Preprocessing  # noqa: E402
from napari_llm4seg import _workers  # noqa: E402
from napari_llm4seg._finetune_widget import FineTuneWidget, find_segment_widget  # noqa: E402
from napari_llm4seg._segment_widget import SegmentWidget  # noqa: E402

TIMEOUT = 60_000


@pytest.fixture(autouse=True)
def _isolated(tmp_path):
    """Settings in a temporary folder; one torch thread (tiny models, 2-core machines)."""
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def notes():
    start = len(notification_manager.records)
    return lambda: [(str(n.severity), str(n.message)) for n in notification_manager.records[start:]]


def small_model(seed: int = 0, classes: tuple[str, ...] = ("background", "lesion")):
    """A tiny LLM4Seg (no LLM layer) whose card trains and segments at 32²."""
    model = tiny_model(seed=seed, num_classes=1 if len(classes) == 2 else len(classes))
    model.card = ModelCard(name=f"tiny{seed}", classes=list(classes), model=model.config.to_dict(),
                           preprocessing=Preprocessing(size=32).to_dict(), training={"data": "none"})
    return model.eval()


@pytest.fixture
def make_widgets(make_napari_viewer, monkeypatch, qtbot):
    """A viewer with the Segment widget (holding ``model``) and the Fine-tune widget docked."""

    def factory(model=None, segment=True):
        model = model if model is not None else small_model()
        monkeypatch.setattr(_workers, "load_job", lambda name: model)
        viewer = make_napari_viewer()
        seg = None
        if segment:
            seg = SegmentWidget(viewer)
            viewer.window.add_dock_widget(seg, name="LLM4Seg: Segment")
            qtbot.waitUntil(lambda: not seg.busy and seg.model is model, timeout=TIMEOUT)
        ft = FineTuneWidget(viewer)
        viewer.window.add_dock_widget(ft, name="LLM4Seg: Fine-tune")
        return viewer, seg, ft

    return factory


def add_pairs(viewer, n: int = 3, size: int = 48) -> list:
    layers = []
    for i in range(n):
        img, mask = disk_image(size, size, seed=i)
        viewer.add_image(img, name=f"img{i}")
        layers.append(viewer.add_labels(mask, name=f"img{i} labels"))
    return layers


def set_steps(ft, steps: int, preset: str = "thorough") -> None:
    ft.options.preset.setCurrentIndex(ft.options.preset.findData(preset))
    ft.options.steps.setValue(steps)


def train(qtbot, ft) -> None:
    assert ft.run()
    assert not ft.run_button.isEnabled() and ft.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not ft.busy, timeout=TIMEOUT)
    assert ft.run_button.isEnabled() and not ft.cancel_button.isEnabled()


def test_default_pairs_add_remove_and_summary(make_widgets):
    viewer, _, ft = make_widgets()
    add_pairs(viewer, 2)
    other = viewer.add_image(np.zeros((20, 30), np.uint8), name="other")
    pairs = ft.pairs_panel.pairs()
    assert [(im.name, lab.name) for im, lab in pairs] == [("img0", "img0 labels"), ("img1", "img1 labels")]
    text = ft.pairs_panel.summary.text()
    assert "2 pairs, 2 slices" in text and "lesion" in text
    ft.pairs_panel.list.setCurrentRow(0)
    ft.pairs_panel.remove_selected()
    assert [lab.name for _, lab in ft.pairs_panel.pairs()] == ["img1 labels"]
    assert "1 pair, 1 slice" in ft.pairs_panel.summary.text()
    ft.pairs_panel.add_pair(viewer.layers["img0"], viewer.layers["img0 labels"])
    assert len(ft.pairs_panel.pairs()) == 2
    ft.pairs_panel.add_pair(other, viewer.layers["img0 labels"])  # shape mismatch
    ft.refresh()
    assert "do not match" in ft.pairs_panel.summary.text()
    viewer.layers.remove("other")
    assert len(ft.pairs_panel.pairs()) == 2 and "Will train on 2 pairs" in ft.pairs_panel.summary.text()


def test_volume_uses_labelled_slices_or_a_z_range(make_widgets):
    viewer, _, ft = make_widgets()
    vol, mask = ct_volume(z=8, h=32, w=32)
    labels = np.zeros_like(mask)
    labels[2], labels[5] = mask[2], mask[5]
    viewer.add_image(vol, name="ct")
    viewer.add_labels(labels, name="ct labels")
    plan = ft.plan()
    assert plan.ok and plan.slices == [[2, 5]] and plan.pixels["lesion"] == 2 * int(mask[0].sum())
    panel = ft.pairs_panel
    panel.mode.setCurrentIndex(panel.mode.findData("range"))
    panel.z0.setValue(1)
    panel.z1.setValue(3)
    assert ft.plan().slices == [[1, 2, 3]] and "3 slices" in panel.summary.text()


def test_run_plot_use_now_save_as_labels_untouched(make_widgets, qtbot, tmp_path, monkeypatch, notes):
    viewer, seg, ft = make_widgets()
    layers = add_pairs(viewer, 3)
    before = [layer.data.copy() for layer in layers]
    data_ids = [id(layer.data) for layer in layers]
    base = seg.model
    base_weights = {k: v.clone() for k, v in base.state_dict().items()}
    set_steps(ft, 5)
    ft.options.val.setCurrentIndex(ft.options.val.findData(0.2))  # 3 pairs: auto would hold none out
    train(qtbot, ft)
    assert len(ft.plot.points["loss"][0]) == 5 and len(ft.plot.points["val_dice"][0]) >= 1
    assert ft.plot.points["loss"][0] == [1.0, 2.0, 3.0, 4.0, 5.0]
    outcome = ft.outcome
    assert outcome is not None and outcome.result.status == "done" and outcome.result.steps == 5
    info = ft.result_panel.info.text()
    assert outcome.pairs == 3 and outcome.val_items == 1 and "val Dice" in info
    assert "1 held out" in info and "the last weights are kept" in info
    assert ft.use_button.isEnabled() and ft.save_button.isEnabled()
    # the labels layers are never modified, and the previous model stays in use until "Use now"
    for layer, data, ident in zip(layers, before, data_ids):
        assert id(layer.data) == ident and np.array_equal(layer.data, data)
    assert seg.model is base and all(torch.equal(v, base_weights[k]) for k, v in base.state_dict().items())
    assert not any(sev == "error" for sev, _ in notes())

    assert ft.use_now()
    assert seg.model is outcome.model and seg.model is not base
    assert "tiny0-finetuned" in seg.model_panel.card.text()

    path = tmp_path / "mine"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(path), "")))
    assert ft.save_as()
    qtbot.waitUntil(lambda: not ft.busy, timeout=TIMEOUT)
    saved = tmp_path / "mine.safetensors"
    assert saved.is_file() and ft.saved_path == saved
    card = read_card(saved)
    assert card.training["base_checkpoint"] == "default" and card.training["base_name"] == "tiny0"
    assert card.training["pairs"] == 3 and card.training["slices"] == 3 and card.training["steps"] == 5
    assert "val_dice" in card.metrics and card.classes == ["background", "lesion"]
    loaded = load_checkpoint(saved, device="cpu")
    for k, v in outcome.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k].cpu(), v.cpu()), k
    assert not list(tmp_path.glob(".mine*.tmp"))  # atomic: no temp file left
    assert ft.settings.get("last_dir", "") == str(tmp_path)


def test_cancel_stops_and_keeps_weights(make_widgets, qtbot, notes):
    viewer, seg, ft = make_widgets()
    add_pairs(viewer, 2)
    set_steps(ft, 5000)
    assert ft.run()
    qtbot.waitUntil(lambda: len(ft.plot.points["loss"][0]) >= 2, timeout=TIMEOUT)
    qtbot.mouseClick(ft.cancel_button, Qt.MouseButton.LeftButton)
    assert not ft.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not ft.busy, timeout=TIMEOUT)
    assert ft.run_button.isEnabled() and not ft.cancel_button.isEnabled() and ft.options.isEnabled()
    result = ft.outcome.result
    assert result.status == "cancelled" and 2 <= result.steps < 5000
    assert len(ft.plot.points["loss"][0]) <= result.steps + 1  # stopped within one step
    assert "Cancelled after" in ft.result_panel.info.text() and ft.use_button.isEnabled()
    assert not any(sev == "error" for sev, _ in notes())


def test_nothing_to_learn_is_refused_with_a_message(make_widgets, notes):
    viewer, seg, ft = make_widgets()
    img, mask = disk_image(48, 48)
    viewer.add_image(img, name="img")
    lab = viewer.add_labels(np.zeros_like(mask), name="img labels")
    assert not ft.run() and ft._job is None
    assert "Nothing to learn" in ft.pairs_panel.summary.text()
    assert "nothing to learn from" in notes()[-1][1] and notes()[-1][0] == "warning"
    assert "Not started" in ft.bar.status.text() and ft.run_button.isEnabled()
    lab.data = np.where(mask > 0, 2, 0).astype(np.uint8)  # a class the binary model does not have
    assert not ft.run()
    assert "label value 2" in notes()[-1][1] and "1 class" in notes()[-1][1]
    viewer.layers.remove("img labels")
    assert not ft.run() and "no training pair" in ft.bar.status.text()


def test_single_pair_says_no_validation_and_trains(make_widgets, qtbot, notes):
    viewer, seg, ft = make_widgets()
    add_pairs(viewer, 1)
    set_steps(ft, 3)
    train(qtbot, ft)
    assert any("fewer than 50 labelled" in msg for _, msg in notes())
    assert ft.outcome.result.status == "done" and ft.outcome.val_items == 0
    assert len(ft.plot.points["loss"][0]) == 3 and not ft.plot.points["val_dice"][0]


def test_check_keeps_a_start_that_segments_better_and_says_so(make_widgets, qtbot, notes):
    """Quick's check: the start already finds the disks and half the labels are off the object, so copies
    fine-tuned on half the pairs do worse on the other half; the start stays and no new weights are offered."""
    start = trained_tiny([TrainingPair(*disk_image(48, 48, seed=i), name=f"d{i}") for i in range(8)])
    viewer, seg, ft = make_widgets(start)
    for i, layer in enumerate(add_pairs(viewer, MIN_ITEMS)):
        if i >= MIN_ITEMS // 2:  # the second fold
            layer.data = np.roll(layer.data, 12, axis=1)
    set_steps(ft, 60, preset="quick")
    ft.options.lr.setValue(1e-2)
    assert ft.options.check.isChecked() and ft.options.config().crosscheck == 2  # on for quick
    train(qtbot, ft)
    outcome = ft.outcome
    assert outcome is not None and outcome.kept_start and outcome.result.steps == 0
    status = ft.bar.status.text()
    assert status.startswith(f"Kept the model you started from: 2-fold check on your {MIN_ITEMS} labelled item(s)")
    assert ft.result_panel.info.text() == status and not ft.use_button.isEnabled()
    assert any(sev == "warning" and "the model you started from is kept" in msg for sev, msg in notes())
    assert seg.model is start

    ft.options.check.setChecked(False)  # unticked: fine-tunes anyway
    assert ft.options.config().crosscheck == 0
    train(qtbot, ft)
    assert ft.outcome.check is None and ft.outcome.result.steps == 60 and ft.use_button.isEnabled()


def test_start_from_a_shipped_starting_point(make_widgets, qtbot, monkeypatch):
    viewer, seg, ft = make_widgets()
    in_use = seg.model
    start, asked = small_model(seed=3), []
    monkeypatch.setattr(_workers, "load_job", lambda name: asked.append(name) or start)
    add_pairs(viewer, 2)
    assert ft.options.start.currentData() == "auto" and ft.options.base.text() == "tiny0 (default)"
    ft.options.start.setCurrentIndex(ft.options.start.findData("gray-start"))
    assert ft.options.base.text().startswith("gray-start (loaded when fine-tuning starts")
    set_steps(ft, 2)
    train(qtbot, ft)
    outcome = ft.outcome
    assert asked == ["gray-start"] and outcome.base_card.name == "tiny3" and outcome.result.steps == 2
    assert outcome.model.card.training["base_checkpoint"] == "gray-start" and seg.model is in_use
    assert ft.settings.get("options/start", None) == "gray-start"


def test_auto_starts_mri_volumes_from_gray_start_and_keeps_the_model_otherwise(make_widgets, qtbot, monkeypatch):
    us = small_model(seed=2)
    us.card.name = "busi-lesion"  # a shipped ultrasound model in use
    viewer, seg, ft = make_widgets(us)
    start, asked = small_model(seed=3), []
    monkeypatch.setattr(_workers, "load_job", lambda name: asked.append(name) or start)
    add_pairs(viewer, 2)  # 8-bit images: the model in use
    ft.refresh()
    assert ft.base_model()[0] is us and ft.options.base.text() == "busi-lesion (default)"
    vol = np.stack([disk_image(48, 48, seed=i)[0] for i in range(6)]).astype(np.float32) * 300.0  # MRI-like
    mask = np.stack([disk_image(48, 48, seed=i)[1] for i in range(6)]).astype(np.uint8)
    mask[1:5] = 0  # two labelled slices
    viewer.add_image(vol, name="mr")
    viewer.add_labels(mask, name="mr labels")
    ft.refresh()
    assert ft.base_model()[:2] == (None, "gray-start") and ft.options.base.text().startswith("gray-start: chosen for MRI/CT")
    set_steps(ft, 2)
    train(qtbot, ft)
    assert asked == ["gray-start"] and ft.outcome.model.card.training["base_checkpoint"] == "gray-start"
    ft.options.start.setCurrentIndex(ft.options.start.findData("in-use"))  # the user's choice wins
    assert ft.base_model()[0] is us and "gray-start starting point usually" in ft.options.base.text()


def test_auto_start_rule():
    from llm4seg.models import auto_start

    mr = TrainingPair(np.zeros((4, 8, 8), np.float32), np.zeros((4, 8, 8), np.uint8), "mr")
    ct = TrainingPair(np.zeros((4, 8, 8), np.int16), np.zeros((4, 8, 8), np.uint8), "ct")
    mr8 = TrainingPair(np.zeros((4, 8, 8), np.uint8), np.zeros((4, 8, 8), np.uint8), "mr 8-bit")
    image = TrainingPair(np.zeros((8, 8), np.float32), np.zeros((8, 8), np.uint8), "us")
    assert auto_start("busi-lesion", [image, mr]) == auto_start("default", [ct]) == "gray-start"
    assert auto_start("thyroid", [mr8]) == "gray-start"
    assert auto_start("busi-lesion", [image]) is None
    assert auto_start("ct-liver", [ct]) is None and auto_start("busi-lesion-finetuned", [mr]) is None


def test_gray_volumes_on_an_ultrasound_model_get_the_gray_start_hint():
    from napari_llm4seg._finetune_job import start_hint

    volume = TrainingPair(np.zeros((4, 8, 8), np.uint8), np.zeros((4, 8, 8), np.uint8), "mr")
    image = TrainingPair(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), "us")
    assert "gray-start" in start_hint("busi-lesion", [image, volume])
    assert start_hint("busi-lesion", [image]) == "" and start_hint("ct-liver", [volume]) == ""


def test_without_segment_widget_uses_default_and_docks_one(make_widgets, qtbot):
    model = small_model(seed=1)
    viewer, _, ft = make_widgets(model, segment=False)
    assert find_segment_widget(viewer) is None and "default" in ft.options.base.text()
    add_pairs(viewer, 2)
    set_steps(ft, 2, preset="quick")  # decoder only, cached features
    train(qtbot, ft)
    assert ft.outcome.result.steps == 2 and ft.outcome.config.train == "decoder"
    assert ft.outcome.model is not model
    assert ft.use_now()
    qtbot.waitUntil(lambda: find_segment_widget(viewer) is not None, timeout=TIMEOUT)
    seg = find_segment_widget(viewer)
    qtbot.waitUntil(lambda: seg.model is ft.outcome.model, timeout=TIMEOUT)


def test_settings_remembered_and_tooltips(make_widgets, make_napari_viewer):
    viewer, _, ft = make_widgets()
    ft.options.preset.setCurrentIndex(ft.options.preset.findData("quick"))
    quick = ft.options.config()
    assert (quick.augment, quick.augment_images, quick.train, quick.cache_features) == (False, True, "decoder", True)
    assert ft.options.augment.currentData() == "images"  # as the preset says: 2D images yes, volume slices no
    ft.options.preset.setCurrentIndex(ft.options.preset.findData("thorough"))
    assert ft.options.augment.currentData() is True and ft.options.config().train == "all"
    assert ft.options.config().augment
    ft.options.steps.setValue(123)
    ft.options.augment.setCurrentIndex(ft.options.augment.findData(False))
    off = ft.options.config()
    assert not off.augment and not off.augment_images
    ft.options.val.setCurrentIndex(ft.options.val.findData(0.3))
    ft.close()
    again = FineTuneWidget(make_napari_viewer())
    v = again.options.values()
    assert (v["preset"], v["steps"], v["augment"], v["val"], v["part"]) == ("thorough", 123, False, 0.3, "all")
    controls = [w for kind in (QAbstractButton, QComboBox, QAbstractSpinBox, QListWidget)
                for w in again.findChildren(kind)]
    assert controls and all(w.toolTip() for w in controls), [w for w in controls if not w.toolTip()]
    again.close()


def test_label_this_next_ranks_unlabelled_slices_and_jumps_there(make_widgets, qtbot):
    viewer, seg, ft = make_widgets()
    panel = ft.suggest_panel
    add_pairs(viewer, 1)
    assert not panel.suggest() and "volume or stack" in panel.status.text()  # a 2D pair: nothing to rank
    viewer.layers.clear()
    vol = np.stack([disk_image(32, 32, seed=i)[0] for i in range(12)])
    lab = np.zeros(vol.shape, np.uint8)
    lab[5] = disk_image(32, 32, seed=5)[1]
    viewer.add_image(vol, name="vol")
    viewer.add_labels(lab, name="vol labels")
    qtbot.waitUntil(lambda: len(ft.pairs_panel.pairs()) == 1, timeout=TIMEOUT)
    assert panel.suggest()
    qtbot.waitUntil(lambda: not panel.busy, timeout=TIMEOUT)
    zs = [panel.list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(panel.list.count())]
    assert zs and all(abs(z - 5) > 2 for z in zs) and len(set(zs)) == len(zs)  # never the labelled slice's side
    texts = [panel.list.item(i).text() for i in range(panel.list.count())]
    unsure = [t for t in texts if "uncertainty" in t]
    scores = [float(t.split()[-1]) for t in unsure]
    assert scores == sorted(scores, reverse=True) and texts[:len(unsure)] == unsure  # the beyond slices come last
    assert all("beyond your labels" in t for t in texts[len(unsure):]) and len(texts) - len(unsure) <= 2
    panel._go(panel.list.item(0))
    assert viewer.dims.current_step[0] == zs[0]
    from llm4seg.suggest import Suggestion

    panel.list.clear()
    panel._on_done([Suggestion(3, 0.52), Suggestion(10, 0.25, "beyond")])
    assert panel.list.item(1).text() == "slice 10   drawn beyond your labels: 25% of the slice"
    assert "1 slice(s) to label next" in panel.status.text() and "1 slice(s) beyond your labelled" in panel.status.text()


def test_segment_output_pairs_only_once_the_user_corrects_it(make_widgets, notes):
    from napari_llm4seg._layers import is_untouched_output, labels_kwargs
    from napari_llm4seg._output import OutputTracker

    viewer, _, ft = make_widgets()
    img, mask = disk_image(48, 48)
    image = viewer.add_image(img, name="us")
    out = viewer.add_labels(np.zeros_like(mask), **labels_kwargs(image, ["background", "lesion"], {"model": "m"}))
    OutputTracker._apply(out, mask[None].astype(out.data.dtype), [0])  # the plugin writing a result: not an edit
    assert is_untouched_output(out) and ft.pairs_panel.pairs() == []
    out.paint((10, 10), 1)  # the user's brush
    assert not is_untouched_output(out) and out.metadata["llm4seg"]["edited"]
    assert [(im.name, lab.name) for im, lab in ft.pairs_panel.pairs()] == [("us", "us labels")]
    ft.pairs_panel.list.setCurrentRow(0)
    ft.pairs_panel.remove_selected()
    out.paint((12, 12), 1)  # a removed pair stays removed
    assert ft.pairs_panel.pairs() == []


def test_only_corrected_slices_of_a_segment_output_train(make_widgets, qtbot):
    """Of a Segment output volume, the slices the user corrected train, one erased to empty as background."""
    from _widget_models import ThresholdModel

    model = ThresholdModel()
    viewer, seg, ft = make_widgets(model)
    vol, _ = ct_volume(z=5, h=16, w=16)
    viewer.add_image(vol, name="ct")
    assert seg.run(viewer.layers["ct"])
    qtbot.waitUntil(lambda: not seg.busy, timeout=TIMEOUT)
    out = viewer.layers["ct labels"]
    assert out.data[3].any() and ft.pairs_panel.pairs() == []
    zz, yy, xx = np.nonzero(out.data[3:4])
    out.data_setitem((zz + 3, yy, xx), 0)  # the user erases everything on slice 3
    qtbot.waitUntil(lambda: len(ft.pairs_panel.pairs()) == 1, timeout=TIMEOUT)
    out.data_setitem((np.array([1]), np.array([0]), np.array([0])), 1)  # and adds a pixel on slice 1
    [pair] = ft.pairs_panel.training_pairs()
    assert list(pair.slices) == [1, 3] and not pair.labels[3].any()
    plan = ft.plan()  # only the corrected slices: the others are the model's own guesses
    assert plan.slices == [[1, 3]] and plan.cleared == 1 and "1 corrected to empty" in plan.describe()


def test_a_bad_pair_is_left_out_not_blocking(make_widgets):
    viewer, _, ft = make_widgets()
    add_pairs(viewer, 1)
    img, mask = disk_image(40, 40, seed=3)
    viewer.add_image(img, name="other")
    viewer.add_labels(mask * 3, name="other labels")  # a class the binary model does not have
    plan = ft.plan()
    assert plan.ok and len(plan.pairs) == 1 and plan.pairs[0].name.startswith("img0 labels")
    text = ft.pairs_panel.summary.text()
    assert "Will train on 1 pair" in text and "label value 3" in text and "left out" in text


def test_a_fine_tune_that_erases_the_rest_of_the_volume_is_said_and_not_handed_over(make_widgets, qtbot, notes):
    """Three corrected slices at an organ's ends: held near the start, the new model is offered as usual;
    without the hold it erases the organ elsewhere, and the panel says so and offers it only 'anyway'."""
    from _factories import organ_volume

    image, mask = organ_volume()
    start = trained_tiny([TrainingPair(image[z], mask[z], f"z{z}") for z in range(0, 24, 2)])
    viewer, seg, ft = make_widgets(start)
    viewer.add_image(image, name="organ")
    assert seg.run(viewer.layers["organ"])
    qtbot.waitUntil(lambda: not seg.busy, timeout=TIMEOUT)
    out = viewer.layers["organ labels"]
    zs = np.flatnonzero(mask.reshape(24, -1).any(1))
    for z in (zs[0], zs[-1]):  # the user erases the organ's two end slices
        zz, yy, xx = np.nonzero(out.data[z:z + 1])
        out.data_setitem((zz + z, yy, xx), 0)
    yy, xx = np.nonzero(out.data[zs[1]])
    far = (yy != 16) | (xx != 16)  # and shrinks the next one to a one-pixel tip
    out.data_setitem((np.full(far.sum(), zs[1]), yy[far], xx[far]), 0)
    qtbot.waitUntil(lambda: len(ft.pairs_panel.pairs()) == 1, timeout=TIMEOUT)
    set_steps(ft, 100, preset="quick")
    ft.options.part.setCurrentIndex(ft.options.part.findData("all"))
    ft.options.lr.setValue(1e-2)
    ft.options.hold.setChecked(False)
    train(qtbot, ft)
    assert ft.outcome.drastic and ft.use_button.text() == "Use anyway" and ft.use_button.isEnabled()
    assert ft.result_panel.info.text().startswith("Careful: the mask changed drastically outside your corrections")
    assert any(sev == "warning" and "changed drastically" in msg for sev, msg in notes()) and seg.model is start
    ft.options.hold.setChecked(True)
    train(qtbot, ft)
    assert not ft.outcome.drastic and ft.use_button.text() == "Use now"
    assert "Afterwards, outside your corrections" in ft.result_panel.info.text()
