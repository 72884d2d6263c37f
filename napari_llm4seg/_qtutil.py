"""Small Qt helpers shared by the widgets."""
from __future__ import annotations

from qtpy.QtWidgets import QHBoxLayout, QWidget

WARN_STYLE = "color: #ffb000; font-weight: bold;"


def row(*widgets: QWidget) -> QWidget:
    """The widgets side by side in a margin-less horizontal box."""
    box = QWidget()
    lay = QHBoxLayout(box)
    lay.setContentsMargins(0, 0, 0, 0)
    for w in widgets:
        lay.addWidget(w)
    return box
