"""Checkpoint handling of the Segment widget: load in a worker thread, keep the model in use on failure."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QFileDialog

from llm4seg.models import DEFAULT_NAME, list_models

from . import _segment_messages as msg
from . import _workers
from ._segment_panels import BROWSE, IN_MEMORY_ROLE


class CheckpointMixin:
    """``load_checkpoint`` / ``set_model`` for :class:`SegmentWidget` (uses its panels, settings and status).

    State: ``model``, ``model_name``, ``_loading`` (the checkpoint being loaded) and ``_in_memory`` (the model
    without a file that the checkpoint box lists).
    """

    model: Any
    model_name: str
    _loading: str | None
    _in_memory: tuple[str, Any] | None
    _remembered: str | None = None  # the last session's checkpoint, until the first image shows whether it fits

    def restore_checkpoint(self) -> None:
        """List the checkpoints and load the last session's (kept until the first image shows whether it fits)."""
        recent = [p for p in self.settings.get("recent", []) if Path(p).is_file()]
        names = [DEFAULT_NAME] + [e.name for e in list_models() if e.name != DEFAULT_NAME]
        wanted = self.settings.get("checkpoint", DEFAULT_NAME)
        if wanted not in names and wanted not in recent:
            wanted = DEFAULT_NAME
        self.model_panel.set_choices(names, recent, wanted)
        self._remembered = wanted if wanted != DEFAULT_NAME else None
        self.load_checkpoint(wanted)

    def update_hint(self) -> None:
        """The Model section's hint: which shipped model fits the input image, and whether the one in use does."""
        text, fits = msg.layer_hint(self.input_layer(), self.model)
        self.model_panel.show_hint(text, fits)
        if text:
            self.drop_remembered(fits)

    def drop_remembered(self, fits: bool) -> None:
        """On the first image: keep the last session's checkpoint when it fits the image, else go back to the
        default (the hint names the model that fits)."""
        if self._remembered is None or self._loading is not None or self.model_name != self._remembered:
            return
        name, self._remembered = self._remembered, None
        if not fits:
            self.load_checkpoint(DEFAULT_NAME)
            show_info(f"LLM4Seg: the last session's model {name} does not fit this image, so the default is "
                      "loaded; the Model section's hint names the model that fits.")

    def load_checkpoint(self, value: str) -> None:
        """Load a checkpoint (name, file path, or BROWSE to pick a file) in a worker thread."""
        if value != self._remembered:
            self._remembered = None  # a model chosen in this session stays
        if value == BROWSE:
            start = str(Path(self.settings.get("last_dir", str(Path.home()))))
            path, _ = QFileDialog.getOpenFileName(self, "Open an LLM4Seg checkpoint", start,
                                                  "LLM4Seg checkpoints (*.safetensors);;All files (*)")
            if not path:
                self.model_panel.select(self.model_name or self._loading or DEFAULT_NAME)
                return
            self.settings.set("last_dir", str(Path(path).parent))
            value = path
        if self._in_memory is not None and value == self._in_memory[0]:
            self.set_model(self._in_memory[1], value)
            return
        self._loading = value
        self.model_panel.show_loading(Path(value).name if Path(value).suffix else value)
        self._set_status(f"Loading checkpoint {value}…")
        self._update_buttons()
        unfreeze = partial(_workers.unfreeze_gc, _workers.freeze_gc())  # see freeze_gc: no GUI stalls
        _workers.start(_workers.load_named, value,
                       connect={"returned": self._on_loaded, "errored": partial(self._on_load_raised, value),
                                "finished": unfreeze})

    def _on_load_raised(self, value: str, exc: BaseException) -> None:
        self._on_loaded((value, exc))  # load_named reports failures as values; this catches anything else

    def _on_loaded(self, loaded: tuple[str, Any]) -> None:
        value, model = loaded
        if value != self._loading:
            return  # a later choice superseded this one
        self._loading = None
        if isinstance(model, BaseException):
            self._on_load_error(value, model)
        else:
            self.set_model(model, value)

    def _on_load_error(self, value: str, exc: BaseException) -> None:
        show_error(msg.load_failed(value, exc, self.model_name if self.model is not None else None))
        self._set_status(f"Loading {value!r} failed ({msg.describe(exc)}).")
        if self.model is not None:
            self.model_panel.select(self.model_name)
            self.model_panel.show_card(self.model.card)
        self._update_buttons()

    def set_model(self, model: Any, name: str = "unsaved model") -> None:
        """Use ``model`` (an LLM4Seg with ``.card``) from now on, e.g. a freshly fine-tuned one.

        A ``name`` that is neither a shipped name nor a file is listed as an in-memory entry of the checkpoint box.
        A checkpoint still loading is superseded (its result is dropped).
        """
        self._loading = None
        self.model, self.model_name = model, name
        panel = self.model_panel
        if Path(name).suffix == ".safetensors":
            panel.set_choices(panel.names, self.settings.add_recent("recent", name), name)
        index = panel.checkpoint.findData(name)
        if index >= 0 and not panel.checkpoint.itemData(index, IN_MEMORY_ROLE):
            panel.select(name)
            self.settings.set("checkpoint", name)
        else:
            panel.show_in_memory(name)
            self._in_memory = (name, model)
        if self._in_memory is not None and panel.checkpoint.findData(self._in_memory[0]) < 0:
            self._in_memory = None  # its entry was dropped when the list was rebuilt
        panel.show_card(model.card)
        self.input_panel.set_card_window(model.card.preprocess.window)
        self._on_input_changed()
        self._set_status(f"Model ready: {model.card.name}.")
        self._update_buttons()

    def _on_device(self, text: str) -> None:
        dev, note = _workers.pick_device(text)
        self.model_panel.device_used.setText(f"→ {dev}" + (" (fallback)" if note else ""))
        self.model_panel.device_used.setToolTip(note or "The device the model actually runs on.")
        self.settings.set("device", text)
