"""The Segment widget's run bar: Segment / Cancel, the progress bar and the status line."""
from __future__ import annotations

from qtpy.QtWidgets import QCheckBox, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from ._qtutil import row as _row


class RunBar(QWidget):
    """Segment / Cancel buttons, the progress bar (+ napari activity panel option) and a status line."""

    def __init__(self, shortcut: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.run_button = QPushButton(f"Segment  ({shortcut})")
        self.run_button.setToolTip(f"Segment the chosen image into a Labels layer ({shortcut}).")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the current batch of slices; nothing is written.")
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.progress_bar.setToolTip("Slices segmented so far.")
        self.progress_bar.setFormat("%v / %m")
        self.activity = QCheckBox("in activity panel")
        self.activity.setToolTip(
            "Also show the progress in napari's activity panel. Its animated indicator repaints the whole window "
            "continuously, which is costly on displays without GPU rendering (remote desktops, Xvfb).")
        lay.addWidget(_row(self.run_button, self.cancel_button))
        lay.addWidget(_row(self.progress_bar, self.activity))
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setToolTip("What the widget did last.")
        lay.addWidget(self.status)

    def set_progress(self, done: int, total: int) -> None:
        """Update the bar with one deferred repaint (QProgressBar.setValue repaints synchronously)."""
        bar = self.progress_bar
        bar.setUpdatesEnabled(False)
        bar.setRange(0, max(1, total))
        bar.setValue(done)
        bar.setUpdatesEnabled(True)
