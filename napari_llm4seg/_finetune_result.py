"""The Fine-tune widget's result actions: hand the fine-tuned weights to the Segment widget, or save them."""
from __future__ import annotations

import copy
from pathlib import Path

from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog

from . import _workers
from ._session import PLUGIN, SEGMENT_WIDGET, find_segment_widget


class ResultActions:
    """'Use now' and 'Save as…' of :class:`~napari_llm4seg._finetune_widget.FineTuneWidget` (a mixin: it uses the
    widget's ``outcome``, ``saved_path``, ``settings``, ``bar``, ``viewer`` and its job state)."""

    def _result_name(self) -> str:
        if self.saved_path is not None:
            return str(self.saved_path)
        return f"fine-tuned {self.outcome.model.card.name}" if self.outcome is not None else ""

    def use_now(self) -> bool:
        """Hand the fine-tuned weights to the Segment widget (docking one if needed)."""
        if not self._offers() or self._job is not None:
            return False
        seg = find_segment_widget(self.viewer)
        if seg is None:
            _, seg = self.viewer.window.add_plugin_dock_widget(PLUGIN, SEGMENT_WIDGET)
        self._handover = (seg, self.outcome.model, self._result_name())
        self.bar.set_status("Handing the weights to the Segment widget when it is idle…")
        self._try_handover()
        return True

    def _try_handover(self) -> None:
        if self._handover is None:
            return
        seg, model, name = self._handover
        try:
            if seg.busy:  # loading its own checkpoint or segmenting: hand over when it is done
                QTimer.singleShot(200, self._try_handover)
                return
            seg.set_model(model, name)
        except RuntimeError:  # the Segment widget was closed meanwhile
            self._handover = None
            return
        self._handover = None
        self.bar.set_status(f"The Segment widget now uses {model.card.name}: segment again to see its masks.")
        self.refresh()

    def save_as(self, path: str | None = None) -> bool:
        """Ask for a file and write the fine-tuned checkpoint (atomically, in a worker thread)."""
        if not self._offers() or self.busy:
            return False
        if path is None:
            start = Path(self.settings.get("last_dir", str(Path.home()))) / f"{self.outcome.model.card.name}.safetensors"
            path, _ = QFileDialog.getSaveFileName(self, "Save the fine-tuned checkpoint", str(start),
                                                  "LLM4Seg checkpoints (*.safetensors)")
            if not path:
                return False
        target = Path(path)
        if not target.name.endswith(".safetensors"):
            target = target.with_name(target.name + ".safetensors")
        self.settings.set("last_dir", str(target.parent))
        from llm4seg.checkpoint import save_checkpoint

        card = copy.deepcopy(self.outcome.model.card)
        self.bar.set_status(f"Saving {target.name}…")
        self._save_job = _workers.start(save_checkpoint, target, self.outcome.model, card, connect={
            "returned": self._on_saved, "errored": self._on_save_error, "finished": self._on_save_finished})
        self._update_buttons()
        return True

    def _on_saved(self, path: Path) -> None:
        self.saved_path = Path(path)
        self.bar.set_status(f"Saved {path} (open it in the Segment widget with Browse…).")
        show_info(f"LLM4Seg: fine-tuned checkpoint saved to {path}")

    def _on_save_error(self, exc: BaseException) -> None:
        show_error(f"LLM4Seg could not save the checkpoint: {exc}")
        self.bar.set_status(f"Saving failed: {exc}", problem=True)

    def _on_save_finished(self) -> None:
        self._save_job = None
        self._update_buttons()

