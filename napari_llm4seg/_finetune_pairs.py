"""Training pairs of the Fine-tune widget: (Image layer, Labels layer) pairs picked from the viewer.

By default every Labels layer the user made (created, opened, or painted into) is paired with the Image
layer of the same shape (the one it was segmented from when known). The Segment widget's output joins the
list when the user first paints a correction into it: an uncorrected output would only teach the model its
own mistakes. For the same reason only the slices corrected in an output volume train, also those the
correction left empty (a false object erased), so "nothing here" is learnt too. The list follows the viewer: pairs of removed layers go, renamed layers are shown by their
new names, and new Labels layers are paired as they appear (unless the user removed that pair).
"""
from __future__ import annotations

from typing import Any

from napari.layers import Image, Labels
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QListWidget,
    QPushButton,
    QSpinBox,
    QWidget,
)

from llm4seg.finetune import TrainingPair

from ._layers import META_KEY, image_data, is_plugin_writing, is_untouched_output, mark_edited, spatial_shape
from ._qtutil import row as _row
from ._session import find_segment_widget

LABELLED, ZRANGE = "labelled", "range"


def _shape(layer: Any) -> tuple[int, ...]:
    return spatial_shape(layer) if isinstance(layer, Image) else tuple(int(s) for s in image_data(layer).shape)


def matching_image(labels: Labels, images: list[Image]) -> Image | None:
    """The Image layer ``labels`` belongs to: same spatial shape, preferring the one it was segmented from,
    then a name prefix ("ct labels" → "ct"), then the first."""
    same = [im for im in images if _shape(im) == _shape(labels)]
    if not same:
        return None
    source = ((labels.metadata or {}).get(META_KEY) or {}).get("segmentation", {}).get("source_layer")
    by_name = [im for im in same if im.name == source] or [im for im in same if labels.name.startswith(im.name)]
    return (by_name or same)[0]


def default_pairs(layers: Any) -> list[tuple[Image, Labels]]:
    """Each Labels layer but untouched Segment outputs, with the Image layer of the same shape (see
    :func:`matching_image`)."""
    images = [layer for layer in layers if isinstance(layer, Image)]
    pairs = []
    for lab in (layer for layer in layers if isinstance(layer, Labels) and not is_untouched_output(layer)):
        image = matching_image(lab, images)
        if image is not None:
            pairs.append((image, lab))
    return pairs


class PairsPanel(QGroupBox):
    """The list of training pairs with add/remove, the slice choice for volumes and the summary line."""

    changed = Signal()  # pairs, slice choice or label data changed (debounced for painting)

    def __init__(self, viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__("Training pairs", parent)
        self.viewer = viewer
        self._pairs: list[tuple[Image, Labels]] = []
        self._dismissed: set[int] = set()  # ids of Labels layers whose pair the user removed
        form = QFormLayout(self)
        self.image = QComboBox()
        self.image.setToolTip("Image layer of a new pair (2D gray/RGB image or a Z×H×W volume).")
        self.labels = QComboBox()
        self.labels.setToolTip("Labels layer of a new pair: 0 = background, 1, 2, … = the model's classes. "
                               "It is only read, never modified.")
        for combo in (self.image, self.labels):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
        self.add_button = QPushButton("Add pair")
        self.add_button.setToolTip("Train on the chosen image with the chosen labels.")
        self.add_button.clicked.connect(self._on_add)
        form.addRow("Image", self.image)
        form.addRow("Labels", _row(self.labels, self.add_button))
        self.list = QListWidget()
        self.list.setMaximumHeight(80)
        self.list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        self.list.setToolTip("Pairs fine-tuning trains on (labels ← image). Each Labels layer you made is paired "
                             "with the image of the same shape; a Segment result joins once you paint a "
                             "correction into it (or add it with Add pair). Of a result volume only the slices "
                             "you corrected train, also a slice where you erased everything (no object there).")
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Leave the selected pairs out of training (the layers stay in the viewer).")
        self.remove_button.clicked.connect(self.remove_selected)
        form.addRow(self.list)
        form.addRow("", self.remove_button)
        self.mode = QComboBox()
        self.mode.addItem("slices with labels", LABELLED)
        self.mode.addItem("every slice of a z-range", ZRANGE)
        self.mode.setToolTip("Volumes: train on the slices that contain labels (of a Segment result: the slices "
                             "you corrected), or on every slice of a z-range "
                             "(slices without labels there count as all background).")
        self.z0 = QSpinBox(maximum=100_000)
        self.z0.setToolTip("First slice of the z-range (0-based, included).")
        self.z1 = QSpinBox(maximum=100_000)
        self.z1.setToolTip("Last slice of the z-range (0-based, included).")
        self.mode.currentIndexChanged.connect(self._on_mode)
        for spin in (self.z0, self.z1):
            spin.valueChanged.connect(lambda *_: self.changed.emit())
        self.dash = QLabel("–")
        form.addRow("Volumes", _row(self.mode, self.z0, self.dash, self.z1))
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setToolTip("What fine-tuning will train on: pairs, slices and labelled pixels per class "
                                "(at the images' own size).")
        form.addRow(self.summary)
        self._debounce = QTimer(self, singleShot=True, interval=300)
        self._debounce.timeout.connect(self.changed)
        layers = viewer.layers
        self._connections = [(layers.events.inserted, self._on_inserted), (layers.events.removed, self._on_removed),
                             (layers.events.moved, self._refresh)]
        for emitter, slot in self._connections:
            emitter.connect(slot)
        for layer in layers:
            self._watch(layer)
        self._pairs = default_pairs(layers)
        self._on_mode()
        self._refresh()

    # --- pairs -------------------------------------------------------------------------------------------
    def pairs(self) -> list[tuple[Image, Labels]]:
        """The current (image, labels) layer pairs."""
        return list(self._pairs)

    def add_pair(self, image: Image, labels: Labels) -> bool:
        """Add a pair (no duplicates); False when it is already listed."""
        if any(lab is labels and im is image for im, lab in self._pairs):
            return False
        self._pairs.append((image, labels))
        self._dismissed.discard(id(labels))
        self._refresh()
        return True

    def remove_selected(self) -> None:
        rows = sorted({self.list.row(item) for item in self.list.selectedItems()}, reverse=True)
        for row in rows:
            self._dismissed.add(id(self._pairs[row][1]))
            del self._pairs[row]
        self._refresh()

    def training_pairs(self) -> list[TrainingPair]:
        """The pairs as arrays (views of the layers' data: read only). Of a Segment output volume, only the
        slices the user corrected train, also those left empty (``TrainingPair.slices``)."""
        return [TrainingPair(image_data(im), image_data(lab), name=f"{lab.name} ← {im.name}",
                             rgb=bool(getattr(im, "rgb", False)), slices=self._corrected(im, lab))
                for im, lab in self._pairs]

    def _corrected(self, image: Image, labels: Labels) -> list[int] | None:
        """Slices of a Segment output volume the user changed since the plugin wrote them; None for any
        other pair (its slices with labels train)."""
        seg = find_segment_widget(self.viewer)
        shape = _shape(labels)
        record = seg.outputs.record_for(image, shape) if seg is not None and len(shape) == 3 else None
        if record is None or record.layer is not labels:
            return None
        return sorted(seg.outputs.edited_slices(record))

    def z_range(self) -> tuple[int, int] | None:
        """(start, stop exclusive) in z-range mode, else None (slices with labels)."""
        if self.mode.currentData() != ZRANGE:
            return None
        a, b = sorted((self.z0.value(), self.z1.value()))
        return a, b + 1

    def _on_add(self) -> None:
        layers = self.viewer.layers
        im, lab = self.image.currentText(), self.labels.currentText()
        if im in layers and lab in layers:
            self.add_pair(layers[im], layers[lab])

    def _on_mode(self, *_: Any) -> None:
        ranged = self.mode.currentData() == ZRANGE
        for w in (self.z0, self.dash, self.z1):
            w.setVisible(ranged)
        self.changed.emit()

    # --- following the viewer ------------------------------------------------------------------------------
    def _watch(self, layer: Any, on: bool = True) -> None:
        slots = [(layer.events.name, self._refresh)]
        if isinstance(layer, Labels):
            slots += [(layer.events.paint, self._on_paint), (layer.events.data, self._on_data)]
        for emitter, slot in slots:
            emitter.connect(slot) if on else emitter.disconnect(slot)

    def _on_data(self, *_: Any) -> None:
        self._debounce.start()

    def _on_paint(self, event: Any) -> None:
        """A user's brush, fill or eraser stroke (not the plugin writing a result): pair a corrected output."""
        layer = event.source
        if not is_plugin_writing(layer):
            was_untouched = is_untouched_output(layer)
            mark_edited(layer)
            if was_untouched and id(layer) not in self._dismissed and all(lab is not layer for _, lab in self._pairs):
                image = matching_image(layer, [im for im in self.viewer.layers if isinstance(im, Image)])
                if image is not None:
                    self._pairs.append((image, layer))
                    self._refresh()
        self._debounce.start()

    def _on_inserted(self, event: Any) -> None:
        layer = event.value
        self._watch(layer)
        images = [im for im in self.viewer.layers if isinstance(im, Image)]
        paired = {id(lab) for _, lab in self._pairs}
        for lab in (x for x in self.viewer.layers if isinstance(x, Labels)):
            if id(lab) in paired or id(lab) in self._dismissed or is_untouched_output(lab) or (
                    lab is not layer and not isinstance(layer, Image)):
                continue
            image = matching_image(lab, images)
            if image is not None:
                self._pairs.append((image, lab))
        self._refresh()

    def _on_removed(self, event: Any) -> None:
        layer = event.value
        self._watch(layer, on=False)
        self._dismissed.discard(id(layer))
        self._pairs = [(im, lab) for im, lab in self._pairs if im is not layer and lab is not layer]
        self._refresh()

    def _refresh(self, *_: Any) -> None:
        layers = self.viewer.layers
        for combo, kind in ((self.image, Image), (self.labels, Labels)):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([layer.name for layer in layers if isinstance(layer, kind)])
            combo.setCurrentIndex(max(0, combo.findText(current)))
            combo.blockSignals(False)
        self.list.clear()
        for im, lab in self._pairs:
            self.list.addItem(f"{lab.name} ← {im.name}  ({' × '.join(map(str, _shape(lab)))})")
        depth = max((_shape(lab)[0] for _, lab in self._pairs if len(_shape(lab)) == 3), default=0)
        for spin in (self.z0, self.z1):
            spin.blockSignals(True)
            at_end = spin is self.z1 and spin.value() in (0, spin.maximum())
            spin.setMaximum(max(0, depth - 1))
            if at_end:
                spin.setValue(spin.maximum())  # a new volume: the range covers it all until changed
            spin.blockSignals(False)
        self.mode.setEnabled(depth > 0)
        self.add_button.setEnabled(self.image.count() > 0 and self.labels.count() > 0)
        self.remove_button.setEnabled(bool(self._pairs))
        self.changed.emit()

    def show_summary(self, text: str, problem: bool = False) -> None:
        self.summary.setText(text)
        self.summary.setStyleSheet("color: #ffb000; font-weight: bold;" if problem else "")
        self.summary.setTextFormat(Qt.TextFormat.PlainText)

    def detach(self) -> None:
        """Stop listening to the viewer (the widget is closing)."""
        for emitter, slot in self._connections:
            emitter.disconnect(slot)
        for layer in self.viewer.layers:
            self._watch(layer, on=False)
        self._connections = []
