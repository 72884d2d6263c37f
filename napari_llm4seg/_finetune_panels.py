"""Control groups of the Fine-tune widget: training options, the run bar (progress, ETA) and the result."""
from __future__ import annotations

from typing import Any

from qtpy.QtCore import QEvent, QObject, QSize, Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QToolButton,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from llm4seg.anchor import KEEP
from llm4seg.crosscheck import CHECK_FOLDS, MARGIN, MIN_ITEMS, NOTHING_TO_KEEP, SMALL_FOLDS
from llm4seg.finetune import MIN_VAL_ITEMS, PRESET_NAMES, preset_config
from llm4seg.models import FINETUNE_STARTS
from llm4seg.train import TrainConfig
from llm4seg.train.config import TRAIN_PARTS
from ._qtutil import WARN_STYLE, choices
from ._qtutil import row as _row

AUTO, IN_USE = "auto", "in-use"  # the Starts-from choices besides the shipped starting points
PART_TEXT = {"decoder": "decoder + head (fast)", "all": "whole network (but the LLM layer)"}
PARTS = tuple((key, PART_TEXT[key]) for key in TRAIN_PARTS)  # (data, text) of the Train choices
PRESET_TIPS = {
    "quick": "quick: 100 steps, only the decoder and head train, on encoder features computed once (2D "
             "images also flipped and rotated) (12-22 s for 5-10 items at 128² on a 2-core CPU; "
             "docs/finetuning.md); from 3 separate images or 8 slices, after a check against the start (2 "
             "folds from 8 items, 3 below: 27-64 s in all for 10 images, 61-88 s for 3-5 images at 256²). From "
             "3 colour images a gray model trains whole at 128², without the check (its first layers must learn "
             "colour; 10 ISIC images from the 256² default: Dice 0.73 in 39 s, 0.75 at 256² "
             "in 3.5 minutes).",
    "thorough": "thorough: 120 steps of the whole network (the frozen LLM layer excepted) at the model's size, "
                "about 4 minutes for 10 items at 256² on a 2-core CPU: slower, adapts more (10 ISIC images on a "
                "gray model: Dice 0.75 instead of quick's 0.73), "
                "and can forget more of what the model knew.",
}


AUG_CHOICES = (("images", "on 2D images, off on volume slices"), (True, "on: flips and 90° rotations"),
               (False, "off"))
VAL_CHOICES = ((None, f"auto (20 % from {MIN_VAL_ITEMS} items)"), (0.0, "none (train on all)"), (0.1, "10 %"),
               (0.2, "20 %"), (0.3, "30 %"))
VAL_TIP = (f"Labelled items held out to measure Dice while training. auto: none below {MIN_VAL_ITEMS} labelled "
           "images/slices (every one trains), 20 % from there on. The last weights are always kept: the held-out "
           "Dice is a measure of these few items only, not a way to choose weights (on 5 CT slices, one hard "
           "slice scored 0.13 while the rest of the volume improved from 0.88 to 0.90).")


class VerticalScroll(QScrollArea):
    """Scrolls ``content`` vertically only; asks for the width the content needs (the dock follows)."""

    def __init__(self, content: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(content)
        content.installEventFilter(self)

    def _width(self, inner: QSize) -> int:
        return inner.width() + self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth()

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        hint = super().minimumSizeHint()
        return QSize(self._width(self.widget().minimumSizeHint()), hint.height())

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        return QSize(self._width(self.widget().sizeHint()), super().sizeHint().height())

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        if obj is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # the content's needs changed: let the dock resize
        return super().eventFilter(obj, event)


class OptionsPanel(QGroupBox):
    """Preset, steps, learning rate, what trains, augmentation and the validation fraction."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Training", parent)
        form = QFormLayout(self)
        self.preset = QComboBox()
        for name in PRESET_NAMES:
            self.preset.addItem(name, name)
        self.preset.setToolTip("Starting values for the options below.\n" + "\n".join(PRESET_TIPS.values()))
        self.preset.currentIndexChanged.connect(lambda *_: self.apply_preset())
        self.start = QComboBox()
        self.start.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.start.setMinimumContentsLength(16)  # long names never widen the panel
        self.start.addItem("auto (by the data)", AUTO)
        self.start.addItem("the model in use", IN_USE)
        for name, what in FINETUNE_STARTS:
            self.start.addItem(f"{name} ({what})", name)
        self.start.setToolTip("The weights fine-tuning starts from: the model of the Segment section (the default "
                              "checkpoint when it has none), or a shipped starting point for a modality no model "
                              "was trained on. The model in use stays until 'Use now'. 'auto' takes gray-start "
                              "when an ultrasound model meets MRI or CT volumes, else the model in use: on 5 "
                              "labelled MRI slices gray-start reached Dice 0.75 where busi-lesion reached 0.56 "
                              "(docs/finetuning.md).")
        self.base = QLabel("")
        self.base.setWordWrap(True)
        self.base.setToolTip(self.start.toolTip())
        form.addRow("Starts from", self.start)
        form.addRow("", self.base)
        form.addRow("Preset", self.preset)
        self.steps = QSpinBox(minimum=1, maximum=100_000, singleStep=10)
        self.steps.setToolTip("Optimiser steps (batches of 4 slices) to train for.")
        self.lr = QDoubleSpinBox(minimum=1e-6, maximum=1.0, decimals=6, singleStep=1e-4)
        self.lr.setToolTip("Peak learning rate (AdamW, with warm-up and cosine decay). Lower it if the loss jumps "
                           "or becomes NaN.")
        form.addRow("Steps", self.steps)
        form.addRow("Learning rate", self.lr)
        self.part = choices(PARTS, "What trains. Decoder + head: encoder features are computed once, so steps are "
                            "fast. Whole network: every layer but the frozen LLM layer (slower, needs more labels). "
                            "Quick on a gray model with colour images trains the whole network anyway: a frozen "
                            "encoder cannot learn colour.")
        form.addRow("Train", self.part)
        self.augment = choices(AUG_CHOICES, "Random flips and 90° rotations of the training items (set by the "
                               "preset). Quick: on 2D images, which have no fixed side (thyroid ultrasound, 10 "
                               "frames: Dice 0.62 instead of 0.57; the model then keeps the Segment widget's "
                               "test-time flips), off on slices of volumes (no gain on CT; anatomy has a side "
                               "there). Thorough: on. Choose off for 2D images whose orientation matters (e.g. "
                               "chest X-ray).")
        form.addRow("Augmentation", self.augment)
        self.check = QCheckBox("keep the start unless fine-tuning beats it")
        self.check.setToolTip(f"From {MIN_ITEMS} labelled images/slices on, or 3 separate images: before training on "
                              "all of them, fine-tune copies on part of them and score those copies and the starting "
                              f"model on the rest ({CHECK_FOLDS} folds from {MIN_ITEMS} items, {SMALL_FOLDS} below). "
                              f"When the copies lose more than {MARGIN:g} Dice, the start is kept and the run says so. "
                              f"Skipped when the start scores below {NOTHING_TO_KEEP:g} Dice on your labelled items "
                              "(nothing to keep). Three to four times the time; on by default for quick.")
        form.addRow("Check", self.check)
        self.hold = QCheckBox("hold the rest near the start")
        self.hold.setChecked(True)
        self.hold.setToolTip("The slices of your volumes away from the corrected ones (and your other images) keep "
                             f"the start's masks: half of them train beside your corrections ({KEEP:.0%} of the "
                             "samples), the other half is segmented by both models afterwards to report how much "
                             "the mask changed there. Three corrected slices at a liver's tip erased the liver "
                             "without it (CT Dice 0.877 → 0.44), kept it with it (0.87). Untick when the start is "
                             "wrong everywhere and your corrections should carry over to every slice "
                             "(docs/finetuning.md, correction patterns).")
        form.addRow("Hold", self.hold)
        self.val = choices(VAL_CHOICES, VAL_TIP)
        form.addRow("Validation", self.val)
        self._form = form
        self.more = QToolButton()
        self.more.setCheckable(True)
        self.more.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.more.setToolTip("Show or hide the preset's settings (steps, learning rate, what trains, augmentation, "
                             "the checks); the summary says what they are.")
        self.more.toggled.connect(self.show_more)
        form.insertRow(form.rowCount() - len(self.ADVANCED), "", self.more)
        for signal in (self.steps.valueChanged, self.part.currentIndexChanged, self.check.toggled,
                       self.hold.toggled):
            signal.connect(lambda *_: self.more.setText("settings" if self.more.isChecked() else self.summary()))
        self.apply_preset()
        self.show_more(False)

    ADVANCED = ("Steps", "Learning rate", "Train", "Augmentation", "Check", "Hold", "Validation")

    def show_more(self, on: bool) -> None:
        """Show the preset's settings, or only a one-line summary of them on the toggle."""
        form = self._form
        for row in range(form.rowCount()):
            label = form.itemAt(row, QFormLayout.ItemRole.LabelRole)
            text = label.widget().text() if label is not None and label.widget() is not None else ""
            if text in self.ADVANCED:
                form.setRowVisible(row, on)
        self.more.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)
        self.more.setChecked(on)
        self.more.setText("settings" if on else self.summary())

    def summary(self) -> str:
        """The options in one line, e.g. '100 steps · decoder · check · hold'."""
        parts = [f"{self.steps.value()} steps", "decoder" if self.part.currentData() == "decoder" else "whole network"]
        parts += [name for name, box in (("check", self.check), ("hold", self.hold)) if box.isChecked()]
        return " · ".join(parts)

    def apply_preset(self) -> None:
        """Fill steps, learning rate, what trains and augmentation from the chosen preset."""
        cfg = preset_config(self.preset.currentData())
        self.steps.setValue(int(cfg.steps or 100))
        self.lr.setValue(cfg.lr)
        self.part.setCurrentIndex(max(0, self.part.findData(cfg.train)))
        self.augment.setCurrentIndex(self.augment.findData(True if cfg.augment else
                                                           "images" if cfg.augment_images else False))
        self.check.setChecked(cfg.crosscheck > 0)
        self.preset.setToolTip(PRESET_TIPS[self.preset.currentData()])

    def config(self) -> TrainConfig:
        """The training configuration for the current options (validation about 8 times per run)."""
        steps, part = int(self.steps.value()), str(self.part.currentData())
        base = preset_config(self.preset.currentData()).to_dict()
        if part != base["train"]:  # e.g. "quick" on the whole network: no cached features, no crops
            base.update(train=part, cache_features=part == "decoder", crop=base["crop"] if part == "decoder" else None)
        aug = self.augment.currentData()
        base.update(steps=steps, lr=float(self.lr.value()), augment=aug is True, augment_images=aug == "images",
                    val_every=max(1, round(steps / 8)), crosscheck=CHECK_FOLDS if self.check.isChecked() else 0)
        return TrainConfig.from_dict(base)

    def values(self) -> dict[str, Any]:
        return {"preset": self.preset.currentData(), "steps": self.steps.value(), "lr": self.lr.value(),
                "part": self.part.currentData(), "augment": self.augment.currentData(), "val": self.val.currentData(),
                "check": self.check.isChecked(), "start": self.start.currentData(), "hold": self.hold.isChecked()}

    def set_values(self, v: dict[str, Any]) -> None:
        self.preset.blockSignals(True)
        self.preset.setCurrentIndex(max(0, self.preset.findData(v["preset"])))
        self.preset.blockSignals(False)
        self.steps.setValue(v["steps"])
        self.lr.setValue(v["lr"])
        self.part.setCurrentIndex(max(0, self.part.findData(v["part"])))
        aug = v["augment"]  # "images", or a bool (saved settings may give it back as text)
        aug = aug if aug == "images" else (aug.lower() == "true" if isinstance(aug, str) else bool(aug))
        self.augment.setCurrentIndex(max(0, self.augment.findData(aug)))
        self.check.setChecked(bool(v.get("check", self.check.isChecked())))
        hold = v.get("hold", True)
        self.hold.setChecked(hold.lower() == "true" if isinstance(hold, str) else bool(hold))
        self.start.setCurrentIndex(max(0, self.start.findData(v.get("start"))))
        self.val.setCurrentIndex(max(0, self.val.findData(v.get("val"))))

    def keep(self) -> float:
        """The share of training samples from the start's masks on the rest of the data (0: not held)."""
        return KEEP if self.hold.isChecked() else 0.0

    def val_fraction(self) -> float | None:
        """The held-out fraction chosen (None: automatic, see ``llm4seg.finetune.validation_fraction``)."""
        return self.val.currentData()


class RunPanel(QWidget):
    """Fine-tune / Cancel, the progress bar with the ETA, and a status line."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.run_button = QPushButton("Fine-tune")
        self.run_button.setToolTip("Train a copy of the Segment widget's model on the pairs above, in the background.")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the current step; the best (or last) weights so far are kept "
                                      "and offered.")
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("%v / %m")
        self.progress_bar.setToolTip("Training steps done (or items whose features are being cached).")
        self.eta = QLabel("")
        self.eta.setToolTip("Speed and estimated time left, from the steps so far.")
        lay.addWidget(_row(self.run_button, self.cancel_button))
        lay.addWidget(_row(self.progress_bar, self.eta))
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setToolTip("What fine-tuning did last.")
        lay.addWidget(self.status)

    def set_progress(self, done: int, total: int, fmt: str = "%v / %m") -> None:
        bar = self.progress_bar
        bar.setUpdatesEnabled(False)
        bar.setFormat(fmt)
        bar.setRange(0, max(1, total))
        bar.setValue(done)
        bar.setUpdatesEnabled(True)

    def set_status(self, text: str, problem: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet(WARN_STYLE if problem else "")


class ResultPanel(QGroupBox):
    """The fine-tuned weights on offer: what they are, "Use now" and "Save as…"."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Fine-tuned model", parent)
        lay = QVBoxLayout(self)
        self.info = QLabel("No fine-tuned weights yet.")
        self.info.setWordWrap(True)
        self.info.setToolTip("The weights the last run kept: best by validation IoU, or the last ones.")
        self.use_button = QPushButton("Use now")
        self.use_button.setToolTip("Hand these weights to the LLM4Seg: Segment widget; segmenting again uses them. "
                                   "Until then the previous model stays in use.")
        self.save_button = QPushButton("Save as…")
        self.save_button.setToolTip("Write a checkpoint (.safetensors) with the training provenance: base checkpoint, "
                                    "pairs, slices, steps and validation metrics.")
        lay.addWidget(self.info)
        lay.addWidget(_row(self.use_button, self.save_button))
