"""Small Qt helpers shared by the widgets."""
from __future__ import annotations

from typing import Any, Iterable

from qtpy.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QHBoxLayout, QPlainTextEdit, QVBoxLayout, QWidget

#: The widest the dock's tabs get: the canvas keeps most of a 1280-pixel-wide window.
MAX_WIDTH = 410

WARN_STYLE = "color: #ffb000; font-weight: bold;"


def row(*widgets: QWidget) -> QWidget:
    """The widgets side by side in a margin-less horizontal box."""
    box = QWidget()
    lay = QHBoxLayout(box)
    lay.setContentsMargins(0, 0, 0, 0)
    for w in widgets:
        lay.addWidget(w)
    return box


def choices(items: Iterable[tuple[Any, str]], tip: str) -> QComboBox:
    """A combo box of ``(data, text)`` items with its tooltip."""
    combo = QComboBox()
    for data, text in items:
        combo.addItem(text, data)
    combo.setToolTip(tip)
    return combo


def text_dialog(parent: QWidget, title: str, text: str) -> QDialog:
    """Show ``text`` (read-only, selectable) in a non-modal dialog with a Close button; returns it."""
    dialog = QDialog(parent)
    dialog.setWindowTitle(title)
    view = QPlainTextEdit(text)
    view.setReadOnly(True)
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
    buttons.rejected.connect(dialog.reject)
    lay = QVBoxLayout(dialog)
    lay.addWidget(view)
    lay.addWidget(buttons)
    dialog.resize(640, 480)
    dialog.open()
    return dialog
