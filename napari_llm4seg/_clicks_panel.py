"""The "Correct with clicks" section of the Segment tab: mode toggle, undo, propagation, click model, timing.

Only widgets live here; :mod:`napari_llm4seg._clicks_controller` connects them to the viewer.
"""
from __future__ import annotations

from typing import Any, Callable

from qtpy.QtCore import Qt
from qtpy.QtGui import QKeySequence, QShortcut
from qtpy.QtWidgets import QFormLayout, QGroupBox, QLabel, QMessageBox, QProgressBar, QPushButton, QWidget

from ._qtutil import row

TOGGLE_KEY, UNDO_KEY = "K", "Shift+K"
HINT = "Click: add · Ctrl+click (⌘ on macOS) or right-click: remove · drag: pan"


def _native(keys: str) -> str:
    return QKeySequence(keys).toString(QKeySequence.SequenceFormat.NativeText)


class ClicksPanel(QGroupBox):
    """Correct the Segment result with clicks on the canvas: each click re-segments the image or slice shown."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Correct with clicks", parent)
        form = QFormLayout(self)
        self.toggle = QPushButton(f"Correct with clicks  ({_native(TOGGLE_KEY)})")
        self.toggle.setCheckable(True)
        self.toggle.setToolTip(
            "While on, a click on the canvas corrects the Segment result of the chosen image: only the 2D image or "
            f"the slice shown is segmented again, one undo step per click. {_native(TOGGLE_KEY)} turns it on / off.")
        self.undo = QPushButton(f"Undo last click  ({_native(UNDO_KEY)})")
        self.undo.setToolTip("Take back the newest click: its marker goes and its slice returns to the mask before it.")
        self.undo.setEnabled(False)
        form.addRow(row(self.toggle, self.undo))
        self.hint = QLabel(HINT)
        self.hint.setWordWrap(True)
        self.hint.setToolTip("Clicks show in the 'LLM4Seg clicks' layer: green adds, magenta removes.")
        form.addRow(self.hint)
        self.propagate = QPushButton("Propagate")
        self.propagate.setToolTip(
            "Volumes: carry the mask of the slice shown to the slices above and below, until the object ends. "
            "Slices you edited (by hand or with clicks) are never overwritten. One undo step.")
        self.cancel = QPushButton("Cancel")
        self.cancel.setToolTip("Stop propagating; nothing is written.")
        self.cancel.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m")
        self.progress.setToolTip("Slices propagated so far.")
        self._volume_row = row(self.propagate, self.cancel, self.progress)
        form.addRow(self._volume_row)
        self.model = QLabel("")
        self.model.setWordWrap(True)
        self.model.setToolTip(
            "The model that takes the clicks: a click model (trained with clicks) when one is installed for the "
            "model in use, else the model in use through a training-free correction near each click.")
        self.timing = QLabel("")
        self.timing.setToolTip("How long the newest click took to segment its image or slice.")
        form.addRow("Model", row(self.model, self.timing))
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setToolTip("What the last click or propagation did.")
        form.addRow(self.status)
        self.toggle_shortcut = self._shortcut(TOGGLE_KEY, self.toggle.click)
        self.undo_shortcut = self._shortcut(UNDO_KEY, self.undo.click)
        self.show_volume(False)

    def _shortcut(self, keys: str, slot: Callable[[], Any]) -> QShortcut:
        shortcut = QShortcut(QKeySequence(keys), self)
        shortcut.setContext(Qt.ShortcutContext.WindowShortcut)
        shortcut.activated.connect(slot)
        return shortcut

    def show_volume(self, volume: bool) -> None:
        """Propagation is for volumes only."""
        self._volume_row.setVisible(volume)

    def show_model(self, text: str, tip: str = "") -> None:
        self.model.setText(text)
        if tip:
            self.model.setToolTip(tip)

    def show_time(self, ms: float | None) -> None:
        self.timing.setText("" if ms is None else f"last click: {ms:.0f} ms")

    def set_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)

    def set_running(self, propagating: bool) -> None:
        """Buttons while a propagation runs (the toggle stays usable: turning the mode off is always fine)."""
        self.propagate.setEnabled(not propagating)
        self.cancel.setEnabled(propagating)


def ask_refine_edited(parent: QWidget, layer_name: str, where: str) -> bool:
    """The user painted ``where`` of ``layer_name`` by hand: may a click change it? True: yes."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle("LLM4Seg: edited labels")
    box.setText(f"You painted {where} of {layer_name!r} by hand since LLM4Seg wrote it.")
    box.setInformativeText("Correct it with your click (your painting is the starting mask; Ctrl+Z on the layer "
                           "undoes the click), or keep it exactly as you drew it?")
    go = box.addButton("Correct with the click", QMessageBox.ButtonRole.DestructiveRole)
    keep = box.addButton("Keep my edits", QMessageBox.ButtonRole.RejectRole)
    box.setDefaultButton(keep)
    box.exec()
    return box.clickedButton() is go
