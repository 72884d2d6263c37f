"""Propagate, of Correct with clicks: carry the mask of the slice shown through the volume in a worker thread.

The slices it fills are written like a Segment run writes (the plugin's output, one undo step): they are the
model's guess, so they neither count as corrections for the Fine-tune tab nor stop a later Segment run. Slices
the user edited, by hand or with clicks, are passed as protected: propagation stops there and never writes them.
"""
from __future__ import annotations

import weakref
from functools import partial
from typing import Any

import numpy as np

from llm4seg.events import CancelToken, Progress

from . import _workers
from ._clicks_jobs import LABEL, Job, propagate_job, write_masks
from ._clicks_panel import ClicksPanel
from ._layers import current_z, image_data, layer_layout, lead_ndim, plugin_writing, slice_digests, spatial_shape


class PropagationMixin:
    """``propagate`` / ``cancel`` for :class:`~napari_llm4seg._clicks_controller.ClicksController`."""

    seg: Any
    viewer: Any
    panel: ClicksPanel
    _prop: Job | None
    busy: bool

    def _say(self, text: str) -> None:  # the controller's status line
        raise NotImplementedError

    def _model(self) -> Any:  # the click model, None while it loads
        raise NotImplementedError

    def _classes(self, source: Any, model: Any) -> list[str] | str:  # the classes, or why clicks cannot work
        raise NotImplementedError

    def _propagate_problem(self, source: Any) -> str | None:
        if self.busy:
            return "Wait for the click, propagation or click-model loading to finish."
        if self.seg.busy:
            return "Wait for the segmentation or the model loading to finish."
        if self.seg.model is None:
            return "No model loaded: pick a checkpoint in the Model box first."
        if source is None:
            return "No image: open a volume and select it as the Segment input."
        try:
            volume = layer_layout(source).startswith("3d") and not lead_ndim(source)
        except ValueError as exc:
            return str(exc)
        return None if volume else f"Propagation is for volumes; {source.name!r} is a single image."

    def propagate(self) -> bool:
        """Carry the mask of the slice shown to the slices above and below; False when nothing started."""
        source = self.seg.input_layer()
        problem = self._propagate_problem(source)
        model = self._model() if problem is None else None
        if problem is None and model is None:
            problem = "Loading the click model… propagate again in a moment."
        record = self.seg.outputs.record_for(source, spatial_shape(source)) if problem is None else None
        if problem is None and record is None:
            problem = f"Nothing to propagate: segment {source.name!r} or click on a slice first."
        classes = self._classes(source, model) if problem is None else None
        if problem is not None or isinstance(classes, str):
            self._say(problem or str(classes))
            return False
        layer, z = record.layer, current_z(source, self.viewer)
        mask = (np.asarray(layer.data[z]) == LABEL).astype(np.uint8)
        if not mask.any():
            self._say(f"Slice {z} has no object to propagate: click on it first.")
            return False
        protected = self.seg.outputs.edited_slices(record) - {z}
        cancel = CancelToken()
        self._prop = Job(weakref.ref(source), weakref.ref(layer), z, cancel=cancel)
        self.panel.set_running(True)
        self.panel.set_progress(0, max(1, layer.data.shape[0] - 1))
        self._say(f"Propagating from slice {z}…")
        self.seg._update_buttons()
        unfreeze = partial(_workers.unfreeze_gc, _workers.freeze_gc())
        _workers.start(propagate_job, image_data(source), model, z, mask, window=self.seg.ct_window,
                       protected=protected, cancel=cancel, device=self.seg.device_choice,
                       connect={"yielded": self._on_prop_event, "returned": self._on_propagated,
                                "errored": self._on_prop_error, "finished": [self._on_prop_finished, unfreeze]})
        return True

    def cancel(self) -> None:
        """Stop a running propagation (nothing is written)."""
        job = self._prop
        if job is not None and job.cancel is not None:
            job.cancel.cancel()
            self.panel.cancel.setEnabled(False)
            self._say("Cancelling the propagation…")

    def _on_prop_event(self, event: Any) -> None:
        if isinstance(event, Progress):
            self.panel.set_progress(event.done, event.total)

    def _on_propagated(self, masks: dict[int, np.ndarray] | None) -> None:
        job = self._prop
        if masks is None:
            self._say("Propagation cancelled: nothing was written.")
            return
        source, layer = job.source(), job.layer()
        record = self.seg.outputs.record_for(source, spatial_shape(source)) if source is not None else None
        if record is None or record.layer is not layer:
            self._say("The image or its labels changed during the propagation: nothing was written.")
            return
        edited = self.seg.outputs.edited_slices(record, sorted(masks))  # painted while it ran: kept
        targets = {z: m for z, m in sorted(masks.items()) if z not in edited}
        if not targets:
            self._say(f"Nothing propagated from slice {job.z}: the object ends there, or the slices next to it are "
                      "ones you edited.")
            return
        with plugin_writing(layer):
            _, before = write_masks(layer, targets)
        zs = sorted(targets)
        for z, d in zip(zs, slice_digests(layer.data, zs)):
            record.digests[z] = d
        record.written.update(zs)
        if record.raw is not None and record.raw.shape == layer.data.shape:  # post-processing previews start here
            record.raw[zs] = np.asarray(layer.data[zs])
        kept = f"; {len(edited)} slice(s) you edited meanwhile kept" if edited else ""
        self._say(f"Propagated slice {job.z} to {len(zs)} slice(s) ({zs[0]}–{zs[-1]}): {before.size} voxels changed "
                  f"in {layer.name!r}{kept} (Ctrl+Z on the layer undoes).")

    def _on_prop_error(self, exc: BaseException) -> None:
        self._say(f"Propagation failed ({type(exc).__name__}: {exc}); nothing was written.")

    def _on_prop_finished(self) -> None:
        self._prop = None
        self.panel.set_running(False)
        self.seg._update_buttons()
