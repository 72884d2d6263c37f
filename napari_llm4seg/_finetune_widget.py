"""The "LLM4Seg: Fine-tune" dock widget: adapt the Segment widget's model to a few labelled images or slices.

Training runs ``llm4seg.finetune.finetune`` (a generator of ``llm4seg.events``) in a napari worker thread on a
copy of the model; the GUI thread only updates the progress, the ETA and the live plot. The labels layers are
only read (a copy is taken when a run starts). The new weights are offered when the run ends: "Use now" hands
them to the Segment widget, "Save as…" writes a checkpoint with the provenance in its card.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QVBoxLayout, QWidget

from llm4seg.device import is_oom
from llm4seg.events import CancelToken, Failed, Log, Metric, Progress
from llm4seg.finetune import PRESET_NAMES, FinetuneOutcome, PairPlan, TrainingPair, summarise
from llm4seg.models import DEFAULT_NAME, auto_start
from llm4seg.train import NothingToLearn
from llm4seg.train.config import TRAIN_PARTS

from . import _workers
from ._finetune_job import finetune_job, outcome_text, shipped_classes, snapshot_labels, start_hint
from ._finetune_pairs import PairsPanel
from ._finetune_panels import AUTO, IN_USE, OptionsPanel, ResultPanel, RunPanel, VerticalScroll
from ._finetune_plot import TrainingPlot
from ._finetune_result import ResultActions
from ._layers import unwrap
from ._qtutil import MAX_WIDTH
from ._segment_widget import SegmentWidget
from ._session import find_segment_widget
from ._settings import WidgetSettings
from ._suggest_panel import SuggestPanel, pair_to_rank

@dataclass
class _Run:
    cancel: CancelToken = field(default_factory=CancelToken)
    total: int = 0
    t0: float | None = None  # time of the first training step (the ETA ignores feature caching)
    d0: int = 0
    failed: str = ""


class FineTuneWidget(ResultActions, QWidget):
    """Fine-tune the Segment widget's model on (image, labels) layer pairs of the viewer."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = unwrap(napari_viewer)
        self.settings = WidgetSettings("finetune")
        self.outcome: FinetuneOutcome | None = None
        self.saved_path: Path | None = None
        self._job: Any = None
        self._save_job: Any = None
        self._run: _Run | None = None
        self._handover: tuple[Any, Any, str] | None = None
        self._named_classes: dict[str, list[str] | None] = {}  # classes of shipped checkpoints, read once
        self._shown_classes: list[str] | None = None
        self._build()
        self._restore()
        self.refresh()

    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        inner = QWidget()
        outer.addWidget(VerticalScroll(inner))  # the dock may be shorter than the controls
        lay = QVBoxLayout(inner)
        self.pairs_panel = PairsPanel(self.viewer)
        self.options = OptionsPanel()
        self.bar = RunPanel()
        self.plot = TrainingPlot()
        self.result_panel = ResultPanel()
        self.suggest_panel = SuggestPanel(self.viewer, self._suggest_source)
        for w in (self.pairs_panel, self.options, self.bar, self.result_panel, self.plot, self.suggest_panel):
            lay.addWidget(w)  # the result right under the run bar: no scrolling to 'Use now' after a run
        lay.addStretch(1)
        self.scroll = outer.itemAt(0).widget()
        self.setMaximumWidth(MAX_WIDTH)
        self.run_button, self.cancel_button = self.bar.run_button, self.bar.cancel_button
        self.use_button, self.save_button = self.result_panel.use_button, self.result_panel.save_button
        self.run_button.clicked.connect(lambda: self.run())
        self.cancel_button.clicked.connect(self.cancel)
        self.use_button.clicked.connect(lambda: self.use_now())
        self.save_button.clicked.connect(lambda: self.save_as())
        self.pairs_panel.changed.connect(self.refresh)
        self.options.start.currentIndexChanged.connect(lambda *_: self.refresh())
        self.pairs_panel.mode.currentIndexChanged.connect(
            lambda *_: self.settings.set("slices", self.pairs_panel.mode.currentData()))
        for signal in (self.options.preset.currentIndexChanged, self.options.steps.valueChanged,
                       self.options.lr.valueChanged, self.options.part.currentIndexChanged,
                       self.options.augment.currentIndexChanged, self.options.check.toggled,
                       self.options.hold.toggled,
                       self.options.start.currentIndexChanged,
                       self.options.val.currentIndexChanged):
            signal.connect(self._store_options)
        self._update_buttons()

    def _restore(self) -> None:
        s, o = self.settings, self.options
        defaults = o.values()
        values = {k: s.get(f"options/{k}", v) for k, v in defaults.items()}
        if values["preset"] not in PRESET_NAMES or values["part"] not in TRAIN_PARTS:
            values = defaults
        o.set_values(values)
        mode = self.pairs_panel.mode
        mode.setCurrentIndex(max(0, mode.findData(s.get("slices", "labelled"))))

    def _store_options(self, *_: Any) -> None:
        for key, value in self.options.values().items():
            self.settings.set(f"options/{key}", value)

    # --- base model and summary ------------------------------------------------------------------------
    def base_model(self) -> tuple[Any, str, SegmentWidget | None]:
        """(model or None, its name, the Segment widget): the starting point chosen in the panel, else the
        Segment widget's model, else the default (None: loaded by name when training starts)."""
        seg = find_segment_widget(self.viewer)
        chosen = self.options.start.currentData()
        if chosen not in (AUTO, IN_USE):
            return None, chosen, seg
        model, name = (seg.model, seg.model_name) if seg is not None and seg.model is not None else (None, DEFAULT_NAME)
        picked = self._auto_start(model) if chosen == AUTO else None
        return (None, picked, seg) if picked else (model, name, seg)

    def _auto_start(self, model: Any) -> str | None:
        """The starting point *auto* takes instead of the model in use (see ``llm4seg.models.auto_start``)."""
        try:
            pairs = self.pairs_panel.training_pairs()
        except Exception:  # noqa: BLE001 - unreadable layers: the plan reports them
            return None
        return auto_start(model.card.name if model is not None else DEFAULT_NAME, pairs)

    def _suggest_source(self) -> tuple[Any, TrainingPair, Any] | str:
        panel = self.pairs_panel
        pair = pair_to_rank(panel.pairs(), panel.training_pairs(), self.viewer.layers.selection.active)
        seg = find_segment_widget(self.viewer)  # the model in use ranks the slices (None: the default)
        return pair if isinstance(pair, str) else (seg.model if seg else None, pair, seg.ct_window if seg else None)

    def _classes(self, model: Any, name: str) -> list[str] | None:
        if model is not None:
            return list(model.card.classes)
        if name not in self._named_classes:
            self._named_classes[name] = shipped_classes(name)
        return self._named_classes[name]

    def plan(self) -> PairPlan:
        """What a run would train on now (reads the layers; nothing is copied). Never raises: a pair that
        cannot be read becomes a problem of the plan."""
        model, name, _ = self.base_model()
        classes = self._classes(model, name)
        try:
            return summarise(self.pairs_panel.training_pairs(), classes, z_range=self.pairs_panel.z_range())
        except Exception as exc:  # noqa: BLE001 - e.g. layer data that cannot be read as an array
            return PairPlan(classes or [], problems=[f"the pairs cannot be read ({type(exc).__name__}: {exc})"])

    def _show_base(self) -> list[str] | None:
        """Show which model fine-tuning starts from; return its classes (None: not known yet)."""
        model, name, seg = self.base_model()
        if model is not None:
            shown = Path(name).name
            text = (model.card.name if shown in (model.card.name, f"fine-tuned {model.card.name}")
                    else f"{model.card.name} ({shown})")
            hint = start_hint(model.card.name, self.pairs_panel.training_pairs())
            self.options.base.setText(f"{text}. {hint}" if hint else text)
        elif self.options.start.currentData() == AUTO and name != DEFAULT_NAME:
            self.options.base.setText(f"{name}: chosen for MRI/CT volumes, which fine-tune better from it than "
                                      "from the ultrasound model in use (loaded when fine-tuning starts)")
        elif self.options.start.currentData() not in (AUTO, IN_USE):
            self.options.base.setText(f"{name} (loaded when fine-tuning starts; the Segment section keeps its model)")
        else:
            loading = seg is not None and seg.busy
            self.options.base.setText(f"{DEFAULT_NAME} checkpoint" + (" (the Segment widget is still loading)"
                                                                     if loading else ""))
        return self._classes(model, name)

    def refresh(self) -> None:
        """Update the base-model line and the summary of the pairs."""
        self._shown_classes = self._show_base()
        plan = self.plan()
        if plan.ok:
            notes = f" ({'; '.join(plan.notes)})" if plan.notes else ""
            self.pairs_panel.show_summary(f"Will train on {plan.describe()}{notes}.")
        else:
            self.pairs_panel.show_summary(f"⚠ Nothing to learn from: {plan.reason()}.", problem=True)

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        self.refresh()  # the Segment widget may have loaded another model meanwhile
        super().showEvent(event)

    def enterEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        if not self.busy and self._show_base() != self._shown_classes:  # another model: re-check the pairs
            self.refresh()
        super().enterEvent(event)

    # --- running ---------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """True while training or saving."""
        return self._job is not None or self._save_job is not None

    def run(self) -> bool:
        """Start fine-tuning; False (with a message) when there is nothing to learn from or it is busy."""
        if self.busy:
            return False
        model, name, seg = self.base_model()
        if model is None and name == DEFAULT_NAME and seg is not None and seg.busy:
            return self._refuse("the Segment widget is still loading its checkpoint; try again when it is ready")
        plan = self.plan()
        if not plan.ok:
            return self._refuse(plan.reason())
        pairs = [dataclasses.replace(p, labels=snapshot_labels(p.labels)) for p in plan.pairs]
        config = self.options.config()
        # train where the Segment widget runs (auto: CUDA > MPS > CPU), on the CPU when that is unavailable
        device, note = _workers.pick_device(seg.device_choice if seg is not None else "auto")
        if note:
            show_warning(f"LLM4Seg fine-tune: {note}")
        config = config.replace(device=str(device))
        window = seg.ct_window if seg is not None else None
        self._run = run = _Run(total=config.steps or 0)
        self.plot.clear()
        self.plot.set_total(run.total)
        self.bar.set_progress(0, run.total)
        self.bar.eta.setText("")
        self.bar.set_status(f"Preparing {plan.describe()}…")
        self.destroyed.connect(run.cancel.cancel)
        unfreeze = partial(_workers.unfreeze_gc, _workers.freeze_gc())
        self._job = _workers.start(
            finetune_job, model, name, pairs, self.pairs_panel.z_range(), config, self.options.val_fraction(),
            window, run.cancel, self.options.keep(), connect={"yielded": self._on_event, "returned": self._on_done,
                                         "errored": self._on_error, "finished": [self._on_finished, unfreeze]})
        self._update_buttons()
        return True

    def _refuse(self, reason: str) -> bool:
        show_warning(f"LLM4Seg fine-tune: nothing to learn from: {reason}.")
        self.bar.set_status(f"Not started: {reason}.", problem=True)
        return False

    def cancel(self) -> None:
        """Stop at the end of the current step, which is dropped (the weights of the steps before are kept)."""
        if self._run is not None:
            self._run.cancel.cancel()
            self.bar.set_status("Cancelling after the current step…")
            self.cancel_button.setEnabled(False)

    def _on_event(self, event: Any) -> None:
        run = self._run
        if run is None:
            return
        if isinstance(event, Metric):
            self.plot.add(event.name, event.step, event.value)
        elif isinstance(event, Progress):
            if event.phase in ("caching", "checking"):
                self.bar.set_progress(event.done, event.total, f"{event.phase} %v / %m")
                self.bar.set_status(event.message)
                return
            self.bar.set_progress(event.done, event.total)
            now = time.perf_counter()
            if run.t0 is None:
                run.t0, run.d0 = now, event.done
            elif event.done > run.d0:
                rate = (event.done - run.d0) / max(1e-9, now - run.t0)
                left = (event.total - event.done) / rate
                speed = f"{rate:.2f}" if rate < 10 else f"{rate:.0f}"
                self.bar.eta.setText(f"{speed} steps/s · ETA {int(left // 60)}:{int(left % 60):02d}")
            self.bar.set_status(event.message)
        elif isinstance(event, Log):
            if event.topic == "no-validation":
                self.plot.show_no_validation(True)
            if event.level == "warning" and event.topic != "change-check":  # said when the run ends; e.g. no validation, a smaller batch or the CPU after out of memory
                show_warning(f"LLM4Seg fine-tune: {event.text}.")
            self.bar.set_status(event.text)
        elif isinstance(event, Failed):
            run.failed = event.reason

    def _on_done(self, outcome: FinetuneOutcome | None) -> None:
        run = self._run
        failed = run.failed if run is not None else ""
        if outcome is not None and outcome.kept_start:  # nothing new to offer: the start is what was in use
            self.outcome, self.saved_path = outcome, None
            text = (f"Kept the model you started from: {outcome.check.describe()}. Label more (or more varied) "
                    "images, or try the thorough preset; untick Check to fine-tune anyway.")
            self.result_panel.info.setText(text)
            self.bar.set_status(text)
            return
        if outcome is None or outcome.result.steps == 0:
            if failed:
                show_error(f"LLM4Seg fine-tune: {failed}")
                self.bar.set_status(failed, problem=True)
                return
            self.bar.set_progress(0, 1)
            self.bar.set_status("Fine-tuning cancelled before the first step: the model is unchanged.")
            show_info("LLM4Seg fine-tune cancelled before the first step; nothing changed.")
            return
        self.outcome, self.saved_path = outcome, None
        QTimer.singleShot(0, self.show_result)
        text, info = outcome_text(outcome)
        self.result_panel.info.setText(info)
        self.use_button.setText("Use anyway" if outcome.drastic else "Use now")
        if failed:
            show_error(f"LLM4Seg fine-tune: {failed}")
            self.bar.set_status(failed, problem=True)
        elif outcome.drastic:
            show_warning(f"LLM4Seg fine-tune: {outcome.change.describe()}; the Segment widget keeps its model.")
            self.bar.set_status(f"{text} The mask changed drastically outside your corrections: see below.",
                                problem=True)
        else:
            self.bar.set_status(f"{text} The new weights are offered below.")
            show_info(f"LLM4Seg: {text}")

    def show_result(self) -> None:
        """Scroll so that the run bar, the result with 'Use now' and the loss plot are in view."""
        self.scroll.ensureWidgetVisible(self.plot, 0, 0)
        self.scroll.ensureWidgetVisible(self.bar, 0, 0)

    def _on_error(self, exc: BaseException) -> None:
        if isinstance(exc, NothingToLearn):
            self._refuse(str(exc))
            return
        oom = is_oom(exc)
        hint = " Use fewer pairs, the quick preset, or free memory." if oom else ""
        show_error(f"LLM4Seg fine-tuning failed ({type(exc).__name__}): {exc}.{hint}")
        self.bar.set_status(f"Fine-tuning failed: {exc}.{hint}", problem=True)

    def _on_finished(self) -> None:
        run, self._run, self._job = self._run, None, None
        if run is not None:
            self.destroyed.disconnect(run.cancel.cancel)
        self.bar.eta.setText("")
        self._update_buttons()

    # --- state -----------------------------------------------------------------------------------------
    def _update_buttons(self) -> None:
        training = self._job is not None
        self.run_button.setEnabled(not self.busy)
        self.cancel_button.setEnabled(training)
        self.pairs_panel.setEnabled(not training)
        self.options.setEnabled(not training)
        has = self._offers() and not self.busy
        self.use_button.setEnabled(has)
        self.save_button.setEnabled(has)

    def _offers(self) -> bool:
        """New weights to use or save: a run made steps and the check did not keep the start."""
        return self.outcome is not None and not self.outcome.kept_start

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        """Stop a running job and detach from the viewer."""
        if self._run is not None:
            self._run.cancel.cancel()
        self._handover = None
        self.pairs_panel.detach()
        self.settings.sync()
        super().closeEvent(event)
