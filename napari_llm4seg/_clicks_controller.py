"""Correct with clicks: the napari side of :mod:`llm4seg.interactive` for the Segment widget.

With the mode on, a click on the canvas becomes a ``Click`` in the data coordinates of the Segment tab's input
image (Ctrl / Cmd or the right button: negative; a drag still pans). ``refine`` re-segments the 2D image or the
slice shown in a worker thread, with that slice's current mask as the previous one, and the result goes into
the Segment result layer as one undo step that touches no other slice.

Click-written slices are not recorded as the plugin's output (the ``OutputTracker`` digests stay), so they are
user edits: a later Segment run asks before replacing them and the Fine-tune tab trains on them. A slice the
user painted by hand is only changed by a click after asking. Propagation writes like a Segment run (the
plugin's output: it is the model's guess) and never over an edited slice.
"""
from __future__ import annotations

import weakref
from functools import partial
from typing import Any, Generator, Sequence

import numpy as np
from napari.layers import Points

from llm4seg.interactive import Click, RefineInput, takes_prompts
from llm4seg.models import click_model_for

from . import _clicks_panel, _output, _workers
from ._clicks_jobs import LABEL, Job, Refined, Step, digest, points_geometry, refine_job, restore, write_masks
from ._clicks_panel import ClicksPanel
from ._clicks_propagate import PropagationMixin
from ._layers import current_z, image_data, layer_layout, lead_ndim, mark_edited, spatial_shape

POINTS_NAME = "LLM4Seg clicks"
DRAG_PIXELS = 4  # a press that moves further is a pan, not a click
POSITIVE, NEGATIVE = (0.2, 0.9, 0.3, 1.0), (1.0, 0.2, 0.9, 1.0)


class ClicksController(PropagationMixin):
    """Correct-with-clicks for one :class:`~napari_llm4seg._segment_widget.SegmentWidget` (``seg``)."""

    def __init__(self, seg: Any, layout: Any = None) -> None:
        """``layout``: where to add the panel (the Segment widget's)."""
        self.seg, self.viewer = seg, seg.viewer
        self.panel = ClicksPanel()
        if layout is not None:
            layout.addWidget(self.panel)
        self._steps: "weakref.WeakKeyDictionary[Any, list[Step]]" = weakref.WeakKeyDictionary()
        self._points: weakref.ref | None = None
        self._models: dict[str, Any] = {}  # click models loaded, by name
        self._names: dict[str, str | None] = {}  # click_model_for, per model name
        self._loading: str | None = None
        self._cache: tuple[tuple, RefineInput, tuple[float, float] | None] | None = None
        self._click: Job | None = None
        self._prop: Job | None = None
        p = self.panel
        p.toggle.toggled.connect(self._on_toggle)
        p.undo.clicked.connect(lambda: self.undo_last())
        p.propagate.clicked.connect(lambda: self.propagate())
        p.cancel.clicked.connect(self.cancel)

    # --- state -----------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """True while a click is computed, a propagation runs or a click model loads."""
        return self._click is not None or self._prop is not None or self._loading is not None

    @property
    def active(self) -> bool:
        return self.panel.toggle.isChecked()

    def set_active(self, on: bool) -> None:
        """Turn the click mode on or off (as the button and its shortcut do)."""
        self.panel.toggle.setChecked(on)

    def steps(self, source: Any = None) -> list[Step]:
        """The clicks on ``source`` (default: the Segment tab's input), oldest first."""
        source = self.seg.input_layer() if source is None else source
        return list(self._steps.get(source, [])) if source is not None else []

    def _say(self, text: str) -> None:
        self.panel.status.setText(text)

    def refresh(self) -> None:
        """The input or the model changed: show its clicks, the click model and the volume-only controls."""
        source = self.seg.input_layer()
        try:
            volume = source is not None and layer_layout(source).startswith("3d") and not lead_ndim(source)
        except ValueError:
            volume = False
        self.panel.show_volume(bool(volume))
        self._show_model()
        self._show_points(source, create=False)

    def _on_toggle(self, on: bool) -> None:
        callbacks = self.viewer.mouse_drag_callbacks
        if not on:
            if self._on_mouse in callbacks:
                callbacks.remove(self._on_mouse)
            self._say("Click mode off.")
            return
        if self._on_mouse not in callbacks:
            callbacks.append(self._on_mouse)
        self._show_model()
        source = self.seg.input_layer()
        if source is None:
            self._say("Open an image and select it as the Segment input, then click on it.")
            return
        self._activate_points(source)
        self._say(f"Click on {source.name!r} to correct its labels.")

    # --- the click model ----------------------------------------------------------------------------------
    def _click_name(self) -> str | None:
        """The name of the model that takes the clicks, None for the Segment model itself (training-free)."""
        seg = self.seg
        if seg.model is None or takes_prompts(seg.model):
            return None
        if seg.model_name not in self._names:
            try:
                self._names[seg.model_name] = click_model_for(seg.model_name)
            except (OSError, ValueError):
                self._names[seg.model_name] = None
        name = self._names[seg.model_name]
        return None if name == seg.model_name or isinstance(self._models.get(name), BaseException) else name

    def _show_model(self) -> None:
        seg, name = self.seg, self._click_name()
        if seg.model is None:
            self.panel.show_model("no model loaded")
        elif name is None:
            own = seg.model.card.name
            self.panel.show_model(own if takes_prompts(seg.model) else f"{own} (training-free)")
        else:
            self.panel.show_model(name if name in self._models else f"{name} (loading…)")
            if self.active and name not in self._models:
                self._load(name)

    def _model(self) -> Any:
        """The model for the next click; None while its click model loads (loading starts here)."""
        name = self._click_name()
        if name is None:
            return self.seg.model
        if name not in self._models:
            self._load(name)
            return None
        return self._models[name]

    def _load(self, name: str) -> None:
        if self._loading is None:
            self._loading = name
            _workers.start(_workers.load_named, name, connect={"returned": self._on_loaded})

    def _on_loaded(self, loaded: tuple[str, Any]) -> None:
        name, model = loaded
        self._loading = None
        self._models[name] = model
        if isinstance(model, BaseException):
            self._say(f"The click model {name!r} did not load ({type(model).__name__}: {model}); clicks go to the "
                      "Segment model's training-free correction instead.")
        self._show_model()
        self.seg._update_buttons()

    # --- clicks -------------------------------------------------------------------------------------------
    def _on_mouse(self, viewer: Any, event: Any) -> Generator[None, None, None]:
        """Mouse callback of the viewer: a press and release without a drag is a click."""
        if not self.active or event.type != "mouse_press" or event.button not in (1, 2):
            return
        start, where = np.asarray(event.pos, float), tuple(event.position)
        positive = event.button == 1 and not any(m in ("Control", "Meta") for m in event.modifiers)
        dragged = False
        yield
        while event.type == "mouse_move":
            dragged = dragged or float(np.hypot(*(np.asarray(event.pos, float) - start))) > DRAG_PIXELS
            yield
        if not dragged and event.type == "mouse_release":
            self.click(where, positive)

    def _problem(self) -> str | None:
        """Why no click can be taken now, or None."""
        if self._loading is not None:
            return f"Loading the click model {self._loading!r}… click again in a moment."
        if self._click is not None or self._prop is not None:
            return "Still working on the last click or propagation."
        if self.seg.busy:
            return "Wait for the segmentation or the model loading to finish, then click again."
        if self.seg.model is None:
            return "No model loaded: pick a checkpoint in the Model box first."
        active = self.viewer.layers.selection.active
        if active is not None and getattr(active, "mode", "pan_zoom") != "pan_zoom":
            return (f"The active layer {active.name!r} is in {active.mode!r} mode: select the "
                    f"{POINTS_NAME!r} layer (or pan/zoom mode) to click.")
        if self.viewer.dims.ndisplay != 2:
            return "Clicks work in the 2D view: switch the viewer to 2D."
        return None

    def _where(self, source: Any, world: Sequence[float]) -> tuple[int, int, int | None] | str:
        """(y, x, z) in ``source``'s pixels for a world position, or why not."""
        try:
            layout = layer_layout(source)
        except ValueError as exc:
            return str(exc)
        if lead_ndim(source):
            return (f"{source.name!r} has time / channel axes: clicks correct 2D images and volumes. Open one "
                    "time point or channel as its own layer.")
        data = source.world_to_data(np.asarray(world, float))
        h, w = spatial_shape(source)[-2:]
        y, x = int(round(float(data[-2]))), int(round(float(data[-1])))
        if not (0 <= y < h and 0 <= x < w):
            return f"That click is outside {source.name!r}: click on the image."
        return y, x, current_z(source, self.viewer) if layout.startswith("3d") else None

    def click(self, world: Sequence[float], positive: bool = True) -> bool:
        """Correct the input's result with a click at ``world`` (viewer coordinates); False when nothing started."""
        source = self.seg.input_layer()
        problem = self._problem() or (None if source is not None else
                                      "No image to correct: open one and select it as the Segment input.")
        where = self._where(source, world) if problem is None else problem
        model = self._model() if not isinstance(where, str) else None
        if isinstance(where, str) or model is None:
            self._say(where if isinstance(where, str) else f"Loading the click model {self._loading!r}… click again.")
            return False
        classes = self._classes(source, model)
        if isinstance(classes, str):
            self._say(classes)
            return False
        y, x, z = where
        record = self._record(source, classes)
        layer = record.layer
        if not self._may_change(record, z):
            self._say(f"Nothing changed: your painting of {layer.name!r} is kept.")
            return False
        click = Click(y, x, positive, z)
        earlier = [s.click for s in self._steps.get(source, []) if s.z == z and s.layer() is layer]
        mask = (np.asarray(layer.data if z is None else layer.data[z]) == LABEL).astype(np.uint8)
        fresh = not earlier and not mask.any() and (0 if z is None else z) not in record.written
        self._start_refine(source, layer, click, earlier + [click], None if fresh else mask)
        return True

    def _classes(self, source: Any, model: Any) -> list[str] | str:
        """The result's classes, or why clicks cannot correct it (more than one object class)."""
        record = self.seg.outputs.record_for(source, spatial_shape(source))
        classes = list(record.classes if record is not None else self.seg.model.card.classes)
        if len(classes) > 2 or getattr(model.config, "num_classes", 1) != 1:
            return (f"Clicks correct one object, but the labels have {len(classes) - 1} classes "
                    f"({', '.join(classes[1:])}): choose a one-class model in the Model box to correct with clicks.")
        return classes

    def _record(self, source: Any, classes: list[str]) -> _output.OutputRecord:
        """The Segment result of ``source``, created empty when there is none yet."""
        outputs, shape = self.seg.outputs, spatial_shape(source)
        record = outputs.record_for(source, shape)
        if record is None:
            seg = self.seg
            info = {"checkpoint": seg.model_name, "model": seg.model.card.name, "classes": classes,
                    "source_layer": source.name, "window": seg.ct_window, "clicks": True}
            outputs.write(source, np.zeros(shape, np.uint8), classes, info, slices=[], plan=_output.WritePlan())
            record = outputs.record_for(source, shape)
            self._activate_points(source)  # the new layer became the active one
        return record

    def _may_change(self, record: _output.OutputRecord, z: int | None) -> bool:
        """False when the user painted this slice by hand and does not want the click to change it."""
        layer = record.layer
        known = {record.digests[0 if z is None else z]}
        known |= {s.after for steps in self._steps.values() for s in steps if s.z == z and s.layer() is layer}
        if digest(layer, z) in known:
            return True
        where = "the labels" if z is None else f"slice {z}"
        return _clicks_panel.ask_refine_edited(self.seg, layer.name, where)

    def _start_refine(self, source: Any, layer: Any, click: Click, clicks: list[Click],
                      previous: np.ndarray | None) -> None:
        seg, z = self.seg, click.z
        model = self._model()
        data = image_data(source)
        key = (id(source), id(data), z, id(model), seg.ct_window, seg.device_choice)
        cached = self._cache if self._cache is not None and self._cache[0][:2] == key[:2] else None
        prepared = cached[1] if cached is not None and cached[0] == key else None
        intensity = cached[2] if cached is not None and cached[0][3:] == key[3:] else None
        self._click = Job(weakref.ref(source), weakref.ref(layer), z, digest(layer, z), click, key)
        self._show_points(source, create=True)
        self._say(f"Correcting {'the image' if z is None else f'slice {z}'}…")
        unfreeze = partial(_workers.unfreeze_gc, _workers.freeze_gc())  # no GUI stalls from full collections
        _workers.start(refine_job, data, model, clicks, previous, z=z, window=seg.ct_window, device=seg.device_choice,
                       prepared=prepared, intensity=intensity,
                       connect={"returned": self._on_refined, "errored": self._on_refine_error,
                                "finished": [self._on_refine_finished, unfreeze]})

    def _on_refined(self, result: Refined) -> None:
        job = self._click
        source, layer = job.source(), job.layer()
        if source is None or layer is None or layer not in self.viewer.layers or source not in self.viewer.layers:
            self._say("The image or its labels left the viewer: the click was dropped.")
            return
        if digest(layer, job.z) != job.start:
            self._say("The labels changed while the click was computed: the click was dropped; click again.")
            return
        self._cache = (job.key, result.prepared, result.intensity)
        indices, before = write_masks(layer, {job.z: result.mask})
        if before.size:
            mark_edited(layer)  # a corrected result: the Fine-tune tab trains on it
        steps = self._steps.setdefault(source, [])
        steps.append(Step(job.click, job.z, indices, before, digest(layer, job.z), weakref.ref(layer)))
        self.panel.show_time(result.ms)
        where = "" if job.z is None else f" on slice {job.z}"
        sign = "+" if job.click.positive else "−"
        self._say(f"Click {len(steps)} ({sign}){where}: {before.size} pixels changed in {layer.name!r} "
                  "(Undo last click, or Ctrl+Z on the layer).")

    def _on_refine_error(self, exc: BaseException) -> None:
        self._say(f"The click failed ({type(exc).__name__}: {exc}); nothing was changed.")

    def _on_refine_finished(self) -> None:
        job, self._click = self._click, None
        source = job.source() if job is not None else None
        self._show_points(source, create=False)  # drops the marker of a click that was not applied
        self.panel.undo.setEnabled(bool(self.steps()))
        self.seg._update_buttons()

    # --- undo -----------------------------------------------------------------------------------------------
    def undo_last(self) -> bool:
        """Take back the newest click on the input: its marker, and its change when its slice is as it left it."""
        source = self.seg.input_layer()
        steps = self._steps.get(source) if source is not None else None
        if self._click is not None or self._prop is not None:
            self._say("Wait for the click or propagation to finish.")
            return False
        if not steps:
            self._say("No click to undo on this image.")
            return False
        step = steps.pop()
        layer = step.layer()
        where = "" if step.z is None else f" on slice {step.z}"
        if layer is not None and layer in self.viewer.layers and digest(layer, step.z) == step.after:
            restore(layer, step)
            self._say(f"Click{where} undone: {step.before.size} pixels back as before it.")
        else:
            self._say(f"Click marker{where} removed; the labels changed since that click, so they stay as they are "
                      "(Ctrl+Z on the layer undoes edits).")
        self._show_points(source, create=False)
        self.panel.undo.setEnabled(bool(steps))
        return True

    # --- the clicks layer -------------------------------------------------------------------------------
    def points_layer(self) -> Points | None:
        """The 'LLM4Seg clicks' layer, when it is in the viewer."""
        layer = self._points() if self._points is not None else None
        return layer if layer is not None and layer in self.viewer.layers else None

    def _show_points(self, source: Any, create: bool) -> Points | None:
        """Show the clicks on ``source`` (and the pending one); ``create``: add the layer if missing."""
        layer = self.points_layer()
        if source is None:
            if layer is not None:
                layer.data = np.zeros((0, layer.ndim))
            return layer
        ndim = len(spatial_shape(source))
        if layer is not None and layer.ndim != ndim:
            self.viewer.layers.remove(layer)
            layer = None
        if layer is None and not create:
            return None
        h, w = spatial_shape(source)[-2:]
        geometry = points_geometry(source, ndim)
        if layer is None:
            layer = self.viewer.add_points(np.zeros((0, ndim)), ndim=ndim, name=POINTS_NAME, border_width=0.1,
                                           border_color="white", size=max(4.0, 0.025 * max(h, w)), **geometry)
            self._points = weakref.ref(layer)
        else:
            now = {"scale": layer.scale, "translate": layer.translate, "rotate": layer.rotate,
                   "affine": layer.affine.affine_matrix}
            for name, value in geometry.items():
                if not np.allclose(np.asarray(now[name]), value):
                    setattr(layer, name, value)
        clicks = [s.click for s in self._steps.get(source, []) if s.layer() is not None]
        job = self._click
        if job is not None and job.source() is source and job.click is not None:
            clicks.append(job.click)
        rows = [(c.y, c.x) if c.z is None else (c.z, c.y, c.x) for c in clicks]
        layer.data = np.asarray(rows, float).reshape(len(rows), ndim)
        if rows:
            layer.face_color = np.asarray([POSITIVE if c.positive else NEGATIVE for c in clicks])
        layer.selected_data = set()
        return layer

    def _activate_points(self, source: Any) -> None:
        """Make the clicks layer the active one, in pan/zoom mode (clicks neither paint nor move points)."""
        layer = self._show_points(source, create=True)
        if layer is not None:
            layer.mode = "pan_zoom"
            self.viewer.layers.selection.active = layer

    def close(self) -> None:
        """The Segment widget closes: stop listening to the mouse and stop a propagation."""
        self.cancel()
        if self._on_mouse in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.remove(self._on_mouse)
