"""Output Labels layers the widget created: find them again, detect user edits, write results undoably.

Only layers created here are ever written to. A re-run writes the changed voxels with
``Labels.data_setitem`` inside ``Labels.block_history()``: one step in napari's undo history (Ctrl+Z).
Edits are detected by comparing a digest per slice with the digest of what was last written.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._layers import labels_kwargs, set_classes, set_info, slice_digests

REPLACE, UNEDITED, CANCEL = "replace", "unedited", "cancel"


@dataclass
class OutputRecord:
    """An output layer and what was last written into it."""

    layer_ref: weakref.ref
    digests: list[bytes]
    raw: np.ndarray | None = None  # last model output before post-processing (full shape)
    classes: list[str] = field(default_factory=list)
    written: set[int] = field(default_factory=set)  # slices ever written (for z-range / current-slice runs)

    @property
    def layer(self) -> Any:
        return self.layer_ref()


@dataclass
class WritePlan:
    """What the user agreed to before a run: the edited slices they allow to be replaced."""

    authorised: set[int] = field(default_factory=set)


class OutputTracker:
    """Output layers keyed by their source Image layer (held weakly; never keeps layers alive)."""

    def __init__(self, viewer: Any) -> None:
        self._viewer_ref = weakref.ref(viewer)
        self._records: "weakref.WeakKeyDictionary[Any, OutputRecord]" = weakref.WeakKeyDictionary()

    def record_for(self, source: Any, shape: tuple[int, ...]) -> OutputRecord | None:
        """The live output record of ``source``, if its layer is still in the viewer with the right shape."""
        record = self._records.get(source)
        viewer = self._viewer_ref()
        layer = record.layer if record is not None else None
        if layer is None or viewer is None or layer not in viewer.layers or tuple(layer.data.shape) != shape:
            return None
        return record

    @staticmethod
    def edited_slices(record: OutputRecord, slices: list[int] | None = None) -> set[int]:
        """Slices (of ``slices``, default all) whose content differs from what was last written."""
        now = slice_digests(record.layer.data)
        candidates = range(len(now)) if slices is None else slices
        return {i for i in candidates if now[i] != record.digests[i]}

    def write(
        self,
        source: Any,
        labels: np.ndarray,
        classes: list[str],
        info: dict[str, Any],
        *,
        slices: list[int],
        plan: WritePlan,
        raw: np.ndarray | None = None,
    ) -> tuple[Any, int, list[int]]:
        """Write ``labels`` (full shape; only ``slices`` are used) for ``source``.

        Returns (layer, voxels changed, edited slices that were kept).

        Creates the output layer on first use; otherwise changes the slices of the range as one undoable step,
        skipping every slice the user edited unless ``plan.authorised`` lists it (edits are never lost).
        """
        shape = tuple(labels.shape)
        record = self.record_for(source, shape)
        if record is None:
            return self._create(source, labels, classes, info, slices, raw), int(np.count_nonzero(labels)), []
        protected = self.edited_slices(record, slices) - plan.authorised
        targets = [z for z in slices if z not in protected]
        layer = record.layer
        changed = self._apply(layer, labels, targets)
        now = slice_digests(layer.data)
        for z in targets:
            record.digests[z] = now[z]
        record.written.update(targets)
        if raw is not None:
            self._store_raw(record, raw, targets)
        if list(classes) != record.classes:
            set_classes(layer, list(classes), info)  # also recolours: only when the classes change
            record.classes = list(classes)
        else:
            set_info(layer, info)
        return layer, changed, sorted(protected)

    def _create(self, source: Any, labels: np.ndarray, classes: list[str], info: dict[str, Any],
                slices: list[int], raw: np.ndarray | None) -> Any:
        viewer = self._viewer_ref()
        layer = viewer.add_labels(labels, **labels_kwargs(source, list(classes), info))
        record = OutputRecord(weakref.ref(layer), slice_digests(layer.data), classes=list(classes),
                              written=set(slices))
        if raw is not None:
            record.raw = raw.copy()
        self._records[source] = record
        return layer

    @staticmethod
    def _store_raw(record: OutputRecord, raw: np.ndarray, targets: list[int]) -> None:
        if record.raw is None or record.raw.shape != raw.shape:
            record.raw = np.zeros_like(raw)
        if raw.ndim == 2:
            record.raw[...] = raw
        else:
            record.raw[targets] = raw[targets]

    @staticmethod
    def _apply(layer: Any, labels: np.ndarray, targets: list[int]) -> int:
        """Write ``labels`` into ``layer`` on ``targets`` slices as one undo step; return voxels changed."""
        if not targets:
            return 0
        current = np.asarray(layer.data)
        if labels.ndim == 2:
            diff = current != labels
            index = np.nonzero(diff)
            values = labels[index]
        else:
            zs = np.asarray(targets)
            diff = current[zs] != labels[zs]
            local = np.nonzero(diff)
            index = (zs[local[0]], local[1], local[2])
            values = labels[index]
        if values.size == 0:
            return 0
        with layer.block_history():
            layer.data_setitem(index, values.astype(layer.data.dtype, copy=False))
        return int(values.size)


def ask_about_edits(parent: Any, layer_name: str, edited: int, total: int) -> str:
    """Ask what to do with an output layer the user edited: REPLACE, UNEDITED or CANCEL."""
    from qtpy.QtWidgets import QMessageBox

    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle("LLM4Seg: edited labels")
    where = f"{edited} of {total} slices" if total > 1 else "the labels"
    box.setText(f"You edited {where} of {layer_name!r} since LLM4Seg wrote it.")
    box.setInformativeText(
        "Replace them with the new segmentation (Ctrl+Z on the layer undoes it), write only into the slices you "
        "did not edit, or cancel the run?"
    )
    replace = box.addButton("Replace edits", QMessageBox.ButtonRole.DestructiveRole)
    keep = box.addButton("Keep edits (unedited slices only)" if total > 1 else "Keep edits",
                         QMessageBox.ButtonRole.AcceptRole)
    cancel = box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(keep if total > 1 else cancel)
    box.exec()
    clicked = box.clickedButton()
    if clicked is replace:
        return REPLACE
    if clicked is keep and total > 1:
        return UNEDITED
    return CANCEL
