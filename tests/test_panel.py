"""The one "LLM4Seg" dock at 1280×800: both sections reachable, the widgets sharing one session."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.gui  # a real viewer: needs a display (xvfb)

from qtpy.QtCore import QPoint, QRect  # noqa: E402
from qtpy.QtWidgets import (  # noqa: E402
    QAbstractButton,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QListWidget,
    QPlainTextEdit,
    QScrollArea,
)

from test_finetune_widget import _isolated, small_model  # noqa: E402,F401 - _isolated: autouse settings
from napari_llm4seg import _workers  # noqa: E402
from napari_llm4seg._finetune_widget import find_segment_widget  # noqa: E402
from napari_llm4seg._panel import FINETUNE, SEGMENT, LLM4SegPanel  # noqa: E402

CONTROLS = (QAbstractButton, QComboBox, QAbstractSpinBox, QListWidget)


def test_nifti_opens_without_a_reader_dialog_once_the_panel_is_there(make_napari_viewer, monkeypatch, tmp_path):
    import nibabel as nib
    import numpy as np

    monkeypatch.setattr(_workers, "load_job", lambda name: small_model())
    viewer = make_napari_viewer()
    LLM4SegPanel(viewer)
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3), np.int16) - 1000, np.diag([0.7, 0.7, 2.0, 1.0])), path)
    # what drag-and-drop and File > Open do (plugin=None: the reader preference; no dialog when one is set).
    # A bare viewer.open(path) means napari's built-in reader by napari's own default (plugin="napari").
    [layer] = viewer.open(str(path), plugin=None)
    assert layer.data.shape == (3, 8, 8) and "llm4seg" in layer.metadata


def test_every_control_of_both_sections_is_reachable_at_1280x800(make_napari_viewer, monkeypatch, qtbot):
    model = small_model()
    monkeypatch.setattr(_workers, "load_job", lambda name: model)
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1280, 800)
    panel = LLM4SegPanel(viewer)
    viewer.window.add_dock_widget(panel, name="LLM4Seg", area="right")
    qtbot.waitUntil(lambda: panel.segment.model is model, timeout=60_000)
    assert find_segment_widget(viewer) is panel.segment  # the session, not a search through Qt
    assert panel.finetune.base_model()[0] is model
    card = panel.segment.model_panel  # a few lines, the whole card behind Details…
    text = card.card.text()
    assert "tiny0" in text and "1-channel gray, 32×32" in text and "lesion" in text and "training" not in text
    card.details.click()
    QApplication.processEvents()
    shown = card._dialog.findChild(QPlainTextEdit).toPlainText()
    assert card._dialog.isVisible() and "training" in shown and "position / attention" in shown
    card._dialog.close()
    checked = 0
    for index in (SEGMENT, FINETUNE):
        panel.show_section(index)
        page = panel.tabs.widget(index)
        scroll = page if isinstance(page, QScrollArea) else page.findChild(QScrollArea)
        QApplication.processEvents()
        for control in (w for kind in CONTROLS for w in page.findChildren(kind)):
            if not control.isVisibleTo(page):  # hidden on purpose (e.g. z-range boxes for a 2D image)
                continue
            scroll.ensureWidgetVisible(control)
            QApplication.processEvents()
            at = QRect(control.mapTo(window, QPoint(0, 0)), control.size())
            assert window.rect().contains(at.center()), (index, control, at, window.size())
            assert control.visibleRegion().boundingRect().height() > 0, (index, control)
            checked += 1
    assert checked >= 20  # the preset's settings fold behind one toggle (hidden ones are skipped)
    assert window.width() <= 1280 and window.height() <= 800
    canvas = viewer.window._qt_viewer.canvas.native
    assert panel.width() <= 430 and canvas.width() >= 0.42 * window.width(), (panel.width(), canvas.width())
    options = panel.finetune.options
    assert not options.steps.isVisibleTo(options) and "100 steps" in options.more.text()
    options.more.click()
    assert options.steps.isVisibleTo(options) and options.hold.isVisibleTo(options)
    panel.close()
    assert find_segment_widget(viewer) is None
