"""Output Labels layers the widget created: find them again, detect user edits, write results undoably.

Only layers created here are ever written to. A re-run writes the changed voxels with
``Labels.data_setitem`` inside ``Labels.block_history()``: one step in napari's undo history (Ctrl+Z).
Edits are detected by comparing a digest per slice with the digest of what was last written.

Slices are counted along all axes but the last two flattened (``_layers.flat_slices``). A layer with time /
channel axes (T, Z, Y, X) gets a full-size output of which each run writes one block ``lead`` (a time point):
slice numbers passed in are then local to that block.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._layers import (
    flat_slices,
    labels_kwargs,
    plugin_writing,
    set_classes,
    set_info,
    slice_digests,
    spatial_shape,
)

REPLACE, UNEDITED, CANCEL = "replace", "unedited", "cancel"


@dataclass
class OutputRecord:
    """An output layer and what was last written into it."""

    layer_ref: weakref.ref
    digests: list[bytes]
    raw: np.ndarray | None = None  # last model output before post-processing (full shape)
    classes: list[str] = field(default_factory=list)
    written: set[int] = field(default_factory=set)  # flat slices ever written (z-range / current-slice runs)

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
    def edited_slices(record: OutputRecord, slices: list[int] | None = None, lead: tuple[int, ...] = ()) -> set[int]:
        """Slices (of ``slices`` in block ``lead``, default all) whose content differs from what was written."""
        off = block_offset(tuple(record.layer.data.shape), lead)
        candidates = range(len(record.digests)) if slices is None else [off + z for z in slices]
        now = slice_digests(record.layer.data, candidates)
        return {z - off for z, digest in zip(candidates, now) if digest != record.digests[z]}

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
        lead: tuple[int, ...] = (),
    ) -> tuple[Any, int, list[int]]:
        """Write ``labels`` (the shape of block ``lead`` of the output; only ``slices`` are used) for ``source``.

        Returns (layer, voxels changed, edited slices that were kept).

        Creates the output layer on first use; otherwise changes the slices of the range as one undoable step,
        skipping every slice the user edited unless ``plan.authorised`` lists it (edits are never lost).
        """
        full = tuple(spatial_shape(source)) if lead else tuple(labels.shape)
        if full[len(lead):] != tuple(labels.shape):
            raise ValueError(f"labels of shape {labels.shape} do not fit block {lead} of an output of shape {full}")
        off = block_offset(full, lead)
        record = self.record_for(source, full)
        if record is None:
            stored = None if raw is None else _full(raw, full, lead) if lead else raw.copy()
            layer = self._create(source, _full(labels, full, lead), classes, info, [off + z for z in slices], stored)
            return layer, int(np.count_nonzero(labels)), []
        protected = self.edited_slices(record, slices, lead) - plan.authorised
        targets = [z for z in slices if z not in protected]
        layer = record.layer
        changed = self._apply(layer, labels, targets, off)
        flat_targets = [off + z for z in targets]
        for z, digest in zip(flat_targets, slice_digests(layer.data, flat_targets)):
            record.digests[z] = digest
        record.written.update(flat_targets)
        if raw is not None:
            self._store_raw(record, raw, targets, off)
        if list(classes) != record.classes:
            set_classes(layer, list(classes), info)  # also recolours: only when the classes change
            record.classes = list(classes)
        else:
            set_info(layer, info)
        return layer, changed, sorted(protected)

    def _create(self, source: Any, labels: np.ndarray, classes: list[str], info: dict[str, Any],
                flat: list[int], raw: np.ndarray | None) -> Any:
        viewer = self._viewer_ref()
        layer = viewer.add_labels(labels, **labels_kwargs(source, list(classes), info))
        record = OutputRecord(weakref.ref(layer), slice_digests(layer.data), classes=list(classes),
                              written=set(flat))
        record.raw = raw
        self._records[source] = record
        return layer

    @staticmethod
    def _store_raw(record: OutputRecord, raw: np.ndarray, targets: list[int], off: int) -> None:
        full = tuple(record.layer.data.shape)
        if record.raw is None or record.raw.shape != full:
            record.raw = np.zeros(full, raw.dtype)
        zs = np.asarray(targets, dtype=np.intp)
        flat_slices(record.raw)[off + zs] = flat_slices(raw)[zs]

    @staticmethod
    def _apply(layer: Any, labels: np.ndarray, targets: list[int], off: int = 0) -> int:
        """Write ``labels`` into ``layer`` on ``targets`` slices (of the block starting at flat slice ``off``)
        as one undo step; return voxels changed."""
        if not targets:
            return 0
        full = tuple(layer.data.shape)
        current, new = flat_slices(layer.data), flat_slices(labels)
        zs = np.asarray(targets, dtype=np.intp)
        local = np.nonzero(current[off + zs] != new[zs])
        values = new[zs[local[0]], local[1], local[2]]
        if values.size == 0:
            return 0
        lead = np.unravel_index(off + zs[local[0]], full[:-2]) if len(full) > 2 else ()
        with plugin_writing(layer), layer.block_history():  # its paint event fires on leaving block_history
            layer.data_setitem((*lead, local[1], local[2]), values.astype(layer.data.dtype, copy=False))
        return int(values.size)


def block_offset(full: tuple[int, ...], lead: tuple[int, ...]) -> int:
    """Flat slice index (see ``flat_slices``) of the first slice of block ``lead`` of an array of shape ``full``."""
    if not lead:
        return 0
    per_block = int(np.prod(full[len(lead):-2], dtype=np.int64))
    return int(np.ravel_multi_index(lead, full[:len(lead)])) * per_block


def _full(block: np.ndarray, full: tuple[int, ...], lead: tuple[int, ...]) -> np.ndarray:
    """``block`` placed at ``lead`` in zeros of shape ``full`` (``block`` itself when there is no lead)."""
    if not lead:
        return block
    out = np.zeros(full, block.dtype)
    out[lead] = block
    return out


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
