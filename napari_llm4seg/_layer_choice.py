"""Keeps a combo box listing the viewer's Image layers, following renames and the active selection."""
from __future__ import annotations

from typing import Any

from napari.layers import Image
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QComboBox


class LayerChoice(QObject):
    """The Image layers of ``viewer`` in ``combo``; selecting an Image layer in napari selects it here."""

    changed = Signal()  # the chosen layer (or its list) changed
    removed = Signal(object)  # a layer left the viewer

    def __init__(self, viewer: Any, combo: QComboBox) -> None:
        super().__init__(combo)
        self.viewer, self.combo = viewer, combo
        layers = viewer.layers
        self._connections = [
            (layers.events.inserted, self._on_inserted),
            (layers.events.removed, self._on_removed),
            (layers.events.moved, self.refresh),
            (layers.events.changed, self._on_replaced),
            (layers.selection.events.active, self._on_active),
        ]
        for emitter, slot in self._connections:
            emitter.connect(slot)
        for layer in layers:
            layer.events.name.connect(self.refresh)
        combo.currentIndexChanged.connect(lambda *_: self.changed.emit())
        self.refresh()
        self._on_active()

    def layer(self) -> Any:
        """The layer named in the combo (an Image unless something bypassed the list's events), or None."""
        name = self.combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def refresh(self, *_: Any) -> None:
        current = self.combo.currentText()
        self.combo.blockSignals(True)
        self.combo.clear()
        self.combo.addItems([layer.name for layer in self.viewer.layers if isinstance(layer, Image)])
        self.combo.setCurrentIndex(max(0, self.combo.findText(current)))
        self.combo.blockSignals(False)
        self.changed.emit()

    def _on_inserted(self, event: Any) -> None:
        event.value.events.name.connect(self.refresh)
        self.refresh()

    def _on_removed(self, event: Any) -> None:
        event.value.events.name.disconnect(self.refresh)
        self.removed.emit(event.value)
        self.refresh()

    def _on_replaced(self, event: Any) -> None:
        """``viewer.layers[i] = other`` swaps a layer in place (no inserted / removed events)."""
        old, new = getattr(event, "old_value", None), getattr(event, "value", None)
        if old is None or new is None or isinstance(old, list) or isinstance(new, list):
            self.refresh()
            return
        old.events.name.disconnect(self.refresh)
        new.events.name.connect(self.refresh)
        self.removed.emit(old)
        self.refresh()

    def _on_active(self, *_: Any) -> None:
        active = self.viewer.layers.selection.active
        if isinstance(active, Image) and active.name != self.combo.currentText():
            self.combo.setCurrentIndex(self.combo.findText(active.name))

    def detach(self) -> None:
        """Stop listening to the viewer (the widget is closing)."""
        for emitter, slot in self._connections:
            emitter.disconnect(slot)
        for layer in self.viewer.layers:
            layer.events.name.disconnect(self.refresh)
        self._connections = []
