"""The "LLM4Seg" dock: Segment and Fine-tune as two tabs of one panel that fits a 1280×800 window.

Each tab scrolls on its own, so every control stays reachable however short the dock is. The two widgets
share the viewer's :class:`~napari_llm4seg._session.Session` (the model in use, its device and CT window).
"""
from __future__ import annotations

from typing import Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QScrollArea, QTabWidget, QVBoxLayout, QWidget

from ._finetune_panels import VerticalScroll
from ._finetune_widget import FineTuneWidget
from ._layers import unwrap
from ._qtutil import MAX_WIDTH
from ._segment_widget import SegmentWidget

SEGMENT, FINETUNE = 0, 1


class LLM4SegPanel(QWidget):
    """Segment | Fine-tune tabs in one dock widget."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = unwrap(napari_viewer)
        self.segment = SegmentWidget(self.viewer)
        self.finetune = FineTuneWidget(self.viewer)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(VerticalScroll(self.segment), "Segment")
        self.tabs.addTab(self.finetune, "Fine-tune")  # scrolls inside already
        self.tabs.setTabToolTip(SEGMENT, "Segment the selected image with a checkpoint; post-process the result.")
        self.tabs.setTabToolTip(FINETUNE, "Fine-tune the model in use on your corrected labels, then use it.")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.tabs)
        self.setMaximumWidth(MAX_WIDTH + 20)
        self._view_reset = False

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        """The first time the dock shows, fit the view to the (now narrower) canvas: images opened before
        the dock appeared keep a zoom that cuts them at the edges otherwise."""
        super().showEvent(event)
        if not self._view_reset:
            self._view_reset = True
            QTimer.singleShot(0, self.viewer.reset_view)

    def show_section(self, index: int) -> None:
        """Bring the Segment (0) or Fine-tune (1) tab to the front."""
        self.tabs.setCurrentIndex(index)

    def scroll_areas(self) -> list[QScrollArea]:
        return self.findChildren(QScrollArea)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        self.segment.close()
        self.finetune.close()
        super().closeEvent(event)
