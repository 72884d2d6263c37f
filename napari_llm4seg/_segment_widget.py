"""The "LLM4Seg: Segment" dock widget: segment the selected image or CT volume into a Labels layer.

Checkpoint loading and segmentation run in napari worker threads; the GUI thread only updates the progress
and writes the result (one undoable step). Outputs are written only into layers this widget created, and
never over slices the user edited without asking.
"""
from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from napari.layers import Image
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QKeySequence, QShortcut
from qtpy.QtWidgets import QVBoxLayout, QWidget

from llm4seg import device as _device
from llm4seg.events import CancelToken, Log, Progress
from llm4seg.postprocess import MODES, PostprocessOptions

from . import _output, _workers
from . import _segment_messages as msg
from ._layer_choice import LayerChoice
from ._clicks_controller import ClicksController
from ._layers import current_z, describe_lead, image_data, layer_layout, lead_index, spatial_shape, unwrap, z_slices
from ._segment_model import CheckpointMixin
from ._segment_panels import SCOPE_RANGE, SCOPE_SLICE, InputPanel, ModelPanel, PostPanel
from ._segment_runbar import RunBar
from ._qtutil import MAX_WIDTH
from ._reader import prefer_this_reader
from ._session import Session
from ._settings import WidgetSettings

SHORTCUT = "Ctrl+Shift+R"
log = logging.getLogger(__name__)


@dataclass
class _Run:
    """What one segmentation run needs when it finishes."""

    source: weakref.ref
    slices: list[int]
    plan: _output.WritePlan
    options: PostprocessOptions
    info: dict[str, Any]
    lead: tuple[int, ...] = ()  # time point / channel of a 4D+ layer
    shape: tuple[int, ...] = ()  # the layer's label shape when the run started
    where: str = ""  # " at t = 3" for a 4D+ layer
    cancel: CancelToken = field(default_factory=CancelToken)
    pbar: Any = None
    reason: str = ""  # why it was cancelled, when not by the user


class SegmentWidget(CheckpointMixin, QWidget):
    """Segment the active Image layer with an LLM4Seg checkpoint (2D, RGB, CT volumes, the shown time point /
    channel of 4D layers; slice, range or all)."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # napari passes plugins a proxy that re-wraps every object on access; keep the real viewer so that
        # layers keep their identity (output tracking, removal checks). Only public API is used.
        self.viewer = unwrap(napari_viewer)
        self.settings = WidgetSettings("segment")
        self.outputs = _output.OutputTracker(self.viewer)
        self.model: Any = None
        self.model_name = ""
        self.last_outcome: _workers.JobOutcome | None = None
        self._loading: str | None = None
        self._in_memory: tuple[str, Any] | None = None  # the model without a file listed in the combo
        self._job: Any = None
        self._run: _Run | None = None
        self._preview_job: Any = None
        self._preview_ctx: tuple = ()
        self._build()
        self._connect_viewer()
        self._restore()
        Session.of(self.viewer).segment = self  # the Fine-tune widget finds this one through the session
        prefer_this_reader()  # NIfTI / DICOM open with this plugin, no dialog

    # --- construction ----------------------------------------------------------------------------------
    def _build(self) -> None:
        lay = QVBoxLayout(self)
        self.model_panel = ModelPanel()
        self.input_panel = InputPanel()
        self.post_panel = PostPanel()
        for panel in (self.model_panel, self.input_panel, self.post_panel):
            lay.addWidget(panel)
        self.bar = RunBar(QKeySequence(SHORTCUT).toString(QKeySequence.SequenceFormat.NativeText))
        lay.addWidget(self.bar)
        self.clicks = ClicksController(self, lay)  # the "Correct with clicks" section, below the run bar
        self.run_button, self.cancel_button = self.bar.run_button, self.bar.cancel_button
        self.progress_bar, self.activity, self.status = self.bar.progress_bar, self.bar.activity, self.bar.status
        self.run_button.clicked.connect(lambda: self.run())
        self.cancel_button.clicked.connect(self.cancel)
        self.activity.toggled.connect(lambda on: self.settings.set("activity", on))
        lay.addStretch(1)
        self.setMaximumWidth(MAX_WIDTH)  # leave the canvas most of the window
        self.shortcut = QShortcut(QKeySequence(SHORTCUT), self)
        self.shortcut.setContext(Qt.ShortcutContext.WindowShortcut)
        self.shortcut.activated.connect(lambda: self.run())
        self._preview_timer = QTimer(self, singleShot=True, interval=250)
        self._preview_timer.timeout.connect(self._preview)
        self.model_panel.checkpointRequested.connect(self.load_checkpoint)
        self.model_panel.deviceChanged.connect(self._on_device)
        self.post_panel.changed.connect(self._on_post_changed)
        self.post_panel.preview.toggled.connect(lambda on: self.settings.set("post/preview", on))

    def _connect_viewer(self) -> None:
        self.layers = LayerChoice(self.viewer, self.input_panel.layer)
        self.layers.changed.connect(self._on_input_changed)
        self.layers.removed.connect(self._on_layer_removed)
        self._on_input_changed()

    def _restore(self) -> None:
        s = self.settings
        devices = _device.available_devices()
        self.model_panel.set_devices(devices, s.get("device", "auto"))
        self._on_device(self.model_panel.device.currentText())
        self.post_panel.blockSignals(True)
        mode = s.get("post/mode", "3d")
        self.post_panel.set_options(PostprocessOptions(
            largest=s.get("post/largest", False), fill_holes=s.get("post/fill", False),
            min_size=max(0, s.get("post/min_size", 0)), mode=mode if mode in MODES else "3d"))
        self.post_panel.preview.setChecked(s.get("post/preview", True))
        self.post_panel.blockSignals(False)
        self.activity.setChecked(s.get("activity", False))
        self.restore_checkpoint()

    # --- input ----------------------------------------------------------------------------------------
    def input_layer(self) -> Any:
        """The Image layer chosen as input, or None."""
        return self.layers.layer()

    def _on_layer_removed(self, layer: Any) -> None:
        run = self._run
        if run is not None and run.source() is layer:
            run.reason = f"its input layer {layer.name!r} was removed"
            run.cancel.cancel()

    def _on_input_changed(self, *_: Any) -> None:
        card_window = self.model is not None and self.model.card.preprocess.window is not None
        self.input_panel.show_layer(self.input_layer(), card_window)
        self.post_panel.show_volume_options(self.input_panel.scope.isEnabled())
        self.clicks.refresh()
        self.update_hint()

    # --- running -----------------------------------------------------------------------------------------
    @property
    def device_choice(self) -> str:
        """The device chosen in the Model section ("auto", "cpu", "cuda:0", ...): fine-tuning trains there too."""
        return self.model_panel.device.currentText()

    @property
    def ct_window(self) -> tuple[float, float] | None:
        """The CT window (level, width) chosen in the Input section, or None (the model's own)."""
        return self.input_panel.window_value()

    @property
    def busy(self) -> bool:
        """True while a checkpoint loads, a segmentation / preview runs or clicks are being applied."""
        return self._loading is not None or self._job is not None or self._preview_job is not None or self.clicks.busy

    def run(self, layer: Any = None) -> bool:
        """Segment ``layer`` (default: the chosen input); returns False when nothing was started."""
        if self.busy:
            return False
        if self.model is None:
            show_warning("LLM4Seg has no model loaded: pick a checkpoint in the Model box first.")
            return False
        layer = unwrap(layer) if layer is not None else self.input_layer()
        if layer is None:
            active = self.viewer.layers.selection.active
            text = msg.no_input(None if active is None or isinstance(active, Image) else active)
            show_warning(text)
            self._set_status(text)
            return False
        try:
            layout = layer_layout(layer)
            lead = lead_index(layer, self.viewer)
        except ValueError as exc:
            show_error(f"LLM4Seg: {exc}")
            self._set_status(f"Nothing segmented: {exc}")
            return False
        full = spatial_shape(layer)
        z_range = self._z_range(layer) if layout.startswith("3d") else None
        slices = z_slices(full[len(lead):], z_range)
        plan = _output.WritePlan()
        record = self.outputs.record_for(layer, full)
        if record is not None and not self._ask_edits(record, slices, plan, lead):
            return False
        opts = self.post_panel.options()
        info = {"checkpoint": self.model_name, "model": self.model.card.name, "classes": list(self.model.card.classes),
                "source_layer": layer.name, "postprocessing": opts.to_dict(), "window": self.input_panel.window_value(),
                "z_range": list(z_range) if z_range else None, "index": list(lead) if lead else None}
        shown = describe_lead(layer, lead, self.viewer) if lead else ""
        where = f" at {shown}" if lead else ""
        run = _Run(weakref.ref(layer), slices, plan, opts, info, lead=lead, shape=full, where=where)
        if lead:
            show_info(msg.lead_note(layer.name, shown))
        hint = msg.modality_hint(layer.name, layer.data, self.model.card, info["window"], bool(getattr(layer, "rgb", False)))
        if hint:
            show_warning(hint)
        if self.activity.isChecked():
            run.pbar = progress(total=len(slices), desc=f"LLM4Seg: {layer.name}")
        self._run = run
        self.bar.set_progress(0, len(slices))
        self._set_status(f"Segmenting {layer.name!r}{where} ({len(slices)} slice{'s' * (len(slices) > 1)})…")
        # stop the job if the widget is deleted mid-run; the GC freeze is undone even then (plain callable)
        self.destroyed.connect(run.cancel.cancel)
        unfreeze = partial(_workers.unfreeze_gc, _workers.freeze_gc())
        try:
            data = image_data(layer)
            self._job = _workers.start(
                _workers.segment_job, data[lead] if lead else data, self.model,
                device=self.model_panel.device.currentText(), options=opts, volume=True if layout == "3d" else None,
                z_range=z_range, window=info["window"], tta=self.input_panel.tta.currentData(), cancel=run.cancel,
                connect={"yielded": self._on_event, "returned": self._on_done, "errored": self._on_error,
                         "finished": [self._on_finished, unfreeze]})
        except Exception as exc:  # noqa: BLE001 - e.g. reading a lazy (dask / zarr) array failed
            unfreeze()
            self._on_error(exc)
            self._on_finished()
            return False
        self._update_buttons()
        return True

    def _z_range(self, layer: Any) -> tuple[int, int] | None:
        scope = self.input_panel.scope.currentData()
        if scope == SCOPE_SLICE:
            z = current_z(layer, self.viewer)
            return z, z + 1
        if scope == SCOPE_RANGE:
            return self.input_panel.z_range()
        return None

    def _ask_edits(self, record: _output.OutputRecord, slices: list[int], plan: _output.WritePlan,
                   lead: tuple[int, ...] = ()) -> bool:
        """If the user edited the output on ``slices`` (of block ``lead``), ask; False means cancel."""
        edited = self.outputs.edited_slices(record, slices, lead)
        if not edited:
            return True
        answer = _output.ask_about_edits(self, record.layer.name, len(edited), len(slices))
        if answer == _output.REPLACE:
            plan.authorised = set(edited)
        elif answer == _output.CANCEL or len(edited) == len(slices):
            self._set_status(f"Nothing written: your edits of {record.layer.name!r} are kept.")
            return False
        return True

    def cancel(self) -> None:
        """Ask the running segmentation to stop after the current batch."""
        if self._run is not None:
            self._run.cancel.cancel()
            self._set_status("Cancelling after the current batch…")
            self.cancel_button.setEnabled(False)

    def _on_event(self, event: Any) -> None:
        run = self._run
        if isinstance(event, Progress) and run is not None:
            self.bar.set_progress(event.done, event.total)
            if run.pbar is not None:
                run.pbar.total = event.total
                run.pbar.update(event.done - run.pbar.n)
        elif isinstance(event, Log):
            if event.level == "warning":
                show_warning(event.text)
            if event.topic == "fallback":
                self.model_panel.device_used.setText("→ cpu (fallback)")
                self.model_panel.device_used.setToolTip(event.text)

    def _on_done(self, outcome: _workers.JobOutcome) -> None:
        run, self.last_outcome = self._run, outcome
        source = run.source() if run is not None else None
        if run is None or outcome.result is None:
            why = run.reason if run is not None and run.reason else "cancelled"
            self.bar.set_progress(0, 1)  # no bar left half-way after a cancel
            self._set_status(f"Segmentation stopped ({why}): nothing was written.")
            notify = show_warning if run is not None and run.reason else show_info
            notify(f"LLM4Seg: segmentation stopped ({why}); nothing was written.")
            return
        if source is None or source not in self.viewer.layers:
            show_warning("LLM4Seg: the input layer was removed during the run; the result was discarded.")
            self._set_status("Input layer removed: nothing was written.")
            return
        if spatial_shape(source) != run.shape:
            show_warning(msg.shape_changed(source.name))
            self._set_status("Input changed shape: nothing was written.")
            return
        result = outcome.result
        info = {**run.info, "device": outcome.device, "seconds": round(result.seconds, 2), "tta": result.tta}
        existed = self.outputs.record_for(source, run.shape) is not None
        try:
            layer, changed, kept = self.outputs.write(source, outcome.labels, result.classes, info, slices=run.slices,
                                                      plan=run.plan, raw=result.labels, lead=run.lead)
        except Exception as exc:  # noqa: BLE001 - e.g. no memory left for the output layer
            log.error("writing the segmentation failed", exc_info=exc)
            show_error(msg.write_failed(source.name, exc))
            self._set_status(f"Writing the result failed ({msg.describe(exc)}).")
            return
        for note in getattr(result, "notes", []):  # e.g. a very large image was downscaled for the network
            show_info(f"LLM4Seg: {source.name!r}: {note}.")
        aug = {"flips": " with test-time flips", "d4": " with 8 test-time symmetries"}.get(result.tta or "", "")
        done = f"Segmented {source.name!r}{run.where}{aug} in {result.seconds:.1f} s on {outcome.device}"
        if existed:
            note = f"; {len(kept)} edited slice(s) kept as you drew them" if kept else ""
            self._set_status(f"{done}: {changed} voxels changed in {layer.name!r}{note} (Ctrl+Z on it undoes).")
        else:
            self._set_status(f"{done}: new layer {layer.name!r} ({changed} labelled voxels).")
        if self.post_panel.options() != run.options:
            self._preview_timer.start()

    def _on_error(self, exc: BaseException) -> None:
        log.error("segmentation failed", exc_info=exc)
        source = self._run.info["source_layer"] if self._run is not None else "the image"
        show_error(msg.run_failed(source, exc))
        self._set_status(f"Segmentation failed ({msg.describe(exc)}): nothing was written. {msg.what_to_do(exc)}")

    def _on_finished(self) -> None:
        run, self._run, self._job = self._run, None, None
        if run is not None:
            self.destroyed.disconnect(run.cancel.cancel)
            if run.pbar is not None:
                run.pbar.close()
        self._update_buttons()

    # --- post-processing preview -----------------------------------------------------------------------
    def _on_post_changed(self) -> None:
        opts = self.post_panel.options()
        for key, value in (("largest", opts.largest), ("fill", opts.fill_holes), ("min_size", opts.min_size),
                           ("mode", opts.mode)):
            self.settings.set(f"post/{key}", value)
        if self.post_panel.preview.isChecked() and not self.busy:
            self._preview_timer.start()

    def _preview(self) -> None:
        """Re-apply the post-processing options to the last raw result of the input (no network run)."""
        layer = self.input_layer()
        if layer is None or self.busy:
            return
        record = self.outputs.record_for(layer, spatial_shape(layer))
        if record is None or record.raw is None:
            return
        slices = sorted(record.written)
        plan = _output.WritePlan()
        if not self._ask_edits(record, slices, plan):
            return
        opts = self.post_panel.options()
        self._preview_ctx = (layer, record, slices, plan, opts)
        self._preview_job = _workers.start(_workers.postprocess_job, record.raw, opts, None, connect={
            "returned": self._on_preview, "errored": self._on_preview_error, "finished": self._on_preview_finished})
        self._update_buttons()

    def _on_preview_error(self, exc: BaseException) -> None:
        show_error(f"LLM4Seg post-processing failed: {exc}")

    def _on_preview(self, labels: Any) -> None:
        layer, record, slices, plan, opts = self._preview_ctx
        if layer not in self.viewer.layers or record.layer is None:
            return
        before = record.layer.metadata.get("llm4seg", {}).get("segmentation") or {}
        info = {**before, "postprocessing": opts.to_dict()}
        _, changed, _kept = self.outputs.write(layer, labels, record.classes, info, slices=slices, plan=plan)
        self._set_status(f"Post-processing ({opts.describe()}) applied: {changed} voxels changed (Ctrl+Z undoes).")

    def _on_preview_finished(self) -> None:
        self._preview_job = None
        self._update_buttons()

    # --- state -------------------------------------------------------------------------------------------
    def _update_buttons(self) -> None:
        running = self._job is not None
        self.run_button.setEnabled(not self.busy and self.model is not None)
        self.cancel_button.setEnabled(running)
        self.model_panel.setEnabled(not running)
        self.input_panel.setEnabled(not running)

    def _set_status(self, text: str) -> None:
        self.status.setText(text)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        """Stop a running job and detach from the viewer."""
        if self._run is not None:
            self._run.reason = "the widget was closed"
            self._run.cancel.cancel()
        self.clicks.close()
        self.layers.detach()
        self.settings.sync()
        Session.of(self.viewer).forget(self)
        super().closeEvent(event)
