"""The control groups of the Segment widget: model (checkpoint, device, card), input, post-processing
(the run bar: ``_segment_runbar``)."""
from __future__ import annotations

import html
from typing import Any

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from llm4seg.cardtext import card_brief, card_text
from llm4seg.postprocess import PostprocessOptions
from llm4seg.preprocess import WINDOWS, looks_like_ct

from ._layers import image_data, layer_layout, lead_ndim, spatial_shape
from ._qtutil import WARN_STYLE as _WARN_STYLE
from ._qtutil import row as _row
from ._qtutil import choices, text_dialog

BROWSE = "__browse__"
IN_MEMORY_ROLE = Qt.ItemDataRole.UserRole + 1  # marks the checkpoint entry of a model that has no file
WINDOW_CARD, WINDOW_CUSTOM = "__card__", "__custom__"
SCOPE_ALL, SCOPE_SLICE, SCOPE_RANGE = "all", "slice", "range"
_KINDS = {"2d": "2D image", "2d-rgb": "RGB image", "3d": "volume, slice by slice", "3d-rgb": "RGB stack"}
_CARD_CHARS = 80  # longer card values are cut in the panel; the tooltip has the full card


def is_untrained(card: Any) -> bool:
    """True for a card that says its model was never trained."""
    status = str((card.training or {}).get("status", "")).lower()
    return status == "untrained" or str(card.description or "").upper().startswith("UNTRAINED")


class ModelPanel(QGroupBox):
    """Checkpoint choice (shipped names, recent files, Browse…), device choice and the checkpoint card."""

    checkpointRequested = Signal(str)  # a name or a file path; BROWSE asks the widget to open a file dialog
    deviceChanged = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Model", parent)
        form = QFormLayout(self)
        self.checkpoint = QComboBox()
        self.checkpoint.setToolTip(
            "Checkpoint to segment with: a shipped model by name ('default' is preselected), a recently used "
            ".safetensors file, or Browse… for another checkpoint file (e.g. one you fine-tuned)."
        )
        self.checkpoint.activated.connect(self._on_activated)
        form.addRow("Checkpoint", self.checkpoint)
        self.hint = QLabel("")
        self.hint.setWordWrap(True)
        self.hint.setToolTip("The kind of image the input looks like and the shipped model trained on that kind "
                             "(llm4seg.modality). A hint: the model in use is never switched for you.")
        form.addRow(self.hint)
        self.device = QComboBox()
        self.device.setToolTip(
            "Where the network runs: auto picks CUDA > MPS > CPU. If the chosen device is unavailable or runs out "
            "of memory, LLM4Seg falls back to the CPU and shows a warning."
        )
        self.device.currentTextChanged.connect(self.deviceChanged)
        self.device_used = QLabel("")
        self.device_used.setToolTip("The device the model actually runs on.")
        form.addRow("Device", _row(self.device, self.device_used))
        self.warning = QLabel("")
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet(_WARN_STYLE)
        self.warning.setVisible(False)
        form.addRow(self.warning)
        self.card = QLabel("")
        self.card.setWordWrap(True)
        self.card.setTextFormat(Qt.TextFormat.RichText)
        self.card.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.card.setToolTip("The checkpoint's model card: classes, frozen LLM layer, training data and metrics.")
        self.details = QPushButton("Details…")
        self.details.setToolTip("The whole model card: training data and command, every metric, the LLM layer.")
        self.details.clicked.connect(self.show_details)
        self.details.setEnabled(False)
        self._full_card = ""
        form.addRow(self.card)
        form.addRow("", self.details)

    def show_hint(self, text: str, fits: bool) -> None:
        """The model hint line: plain when the model in use fits the image, highlighted when another does."""
        self.hint.setText(text)
        self.hint.setStyleSheet("" if fits else _WARN_STYLE)
        self.hint.setVisible(bool(text))

    def set_choices(self, names: list[str], recent: list[str], current: str) -> None:
        """Fill the checkpoint list: names, then recent files, then Browse…; select ``current``."""
        self.names = list(names)
        self.checkpoint.blockSignals(True)
        self.checkpoint.clear()
        for name in names:
            self.checkpoint.addItem(name, name)
        for path in recent:
            if path not in names:
                self.checkpoint.addItem(path.replace("\\", "/").rsplit("/", 1)[-1], path)
                self.checkpoint.setItemData(self.checkpoint.count() - 1, path, Qt.ItemDataRole.ToolTipRole)
        self.checkpoint.addItem("Browse…", BROWSE)
        self.select(current)
        self.checkpoint.blockSignals(False)

    def show_in_memory(self, name: str) -> None:
        """List and select a model that has no file (e.g. just fine-tuned), replacing an earlier such entry."""
        box = self.checkpoint
        box.blockSignals(True)
        for i in reversed(range(box.count())):
            if box.itemData(i, IN_MEMORY_ROLE):
                box.removeItem(i)
        index = max(0, box.count() - 1)  # before Browse…
        box.insertItem(index, f"{name} (in memory)", name)
        box.setItemData(index, True, IN_MEMORY_ROLE)
        box.setItemData(index, f"{name}: not saved to a file (save it from the Fine-tune widget to keep it).",
                        Qt.ItemDataRole.ToolTipRole)
        box.setCurrentIndex(index)
        box.blockSignals(False)

    def select(self, value: str) -> None:
        index = self.checkpoint.findData(value)
        self.checkpoint.setCurrentIndex(max(0, index))

    def current(self) -> str:
        return str(self.checkpoint.currentData())

    def _on_activated(self, index: int) -> None:
        self.checkpointRequested.emit(str(self.checkpoint.itemData(index)))

    def set_devices(self, devices: list[str], current: str) -> None:
        self.device.blockSignals(True)
        self.device.clear()
        self.device.addItems(["auto", *devices])
        self.device.setCurrentIndex(max(0, self.device.findText(current)))
        self.device.blockSignals(False)

    def show_loading(self, name: str) -> None:
        self.card.setText(f"<i>Loading {html.escape(name)}…</i>")
        self.warning.setVisible(False)

    def show_card(self, card: Any) -> None:
        """A few lines of the card (name, input, classes, key scores); the rest behind Details…; a visible
        warning for untrained models."""
        rows = card_brief(card)
        cells = "".join(
            f"<tr><td style='padding-right:8px'><b>{html.escape(k)}</b></td>"
            f"<td>{html.escape(v if len(v) <= _CARD_CHARS else v[:_CARD_CHARS - 1] + '…')}</td></tr>"
            for k, v in rows
        )
        self.card.setText(f"<table>{cells}</table>")
        self._full_card = card_text(card)
        self.card.setToolTip("Checkpoint card (full text):\n" + self._full_card)
        self.details.setEnabled(True)
        untrained = is_untrained(card)
        self.warning.setText(f"⚠ {card.description}" if untrained else "")
        self.warning.setVisible(untrained)


    def show_details(self) -> None:
        """The full model card in a dialog (selectable text)."""
        self._dialog = text_dialog(self, "Model card", self._full_card)


class InputPanel(QGroupBox):
    """Input image layer, CT window, and the scope (whole, current slice, z-range)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Input", parent)
        form = QFormLayout(self)
        self.layer = QComboBox()
        self.layer.setToolTip(
            "Image layer to segment: follows the layer selected in the layer list. 2D gray, RGB(A), a Z×H×W "
            "volume (segmented slice by slice) or a stack of RGB images."
        )
        form.addRow("Image", self.layer)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.info.setToolTip("Shape, type and how the image will be segmented.")
        form.addRow(self.info)
        self.window = QComboBox()
        self.window.setToolTip(
            "CT intensity window (level/width in HU) mapped to the network's input range. 'checkpoint' uses the "
            "window the model was trained with (preselected); choose a preset or 'custom' to override it."
        )
        self.level = QDoubleSpinBox(minimum=-3000, maximum=5000, decimals=0, singleStep=10)
        self.level.setToolTip("Window level (centre) in HU; editable with 'custom'.")
        self.width = QDoubleSpinBox(minimum=1, maximum=10000, decimals=0, singleStep=10)
        self.width.setToolTip("Window width in HU; editable with 'custom'.")
        self.window.currentIndexChanged.connect(self._on_window)
        self._lw_row = _row(QLabel("level"), self.level, QLabel("width"), self.width)
        form.addRow("CT window", self.window)
        form.addRow("", self._lw_row)
        self._window_rows = [self.window, form.labelForField(self.window), self._lw_row]
        self.scope = QComboBox()
        self.scope.addItem("whole image / volume", SCOPE_ALL)
        self.scope.addItem("current slice", SCOPE_SLICE)
        self.scope.addItem("z-range", SCOPE_RANGE)
        self.scope.setToolTip(
            "What to segment: everything, only the slice shown in the viewer, or the slices of a z-range. "
            "Slices outside the scope keep their labels."
        )
        self.z0 = QSpinBox()
        self.z0.setToolTip("First slice of the z-range (0-based, included).")
        self.z1 = QSpinBox()
        self.z1.setToolTip("Last slice of the z-range (0-based, included).")
        self.scope.currentIndexChanged.connect(self._on_scope)
        self._dash = QLabel("–")
        self._scope_row = _row(self.scope, self.z0, self._dash, self.z1)
        form.addRow("Scope", self._scope_row)
        self.tta = choices((("auto", "auto (flips if the model trained with them)"), (None, "off"),
                            ("flips", "flips (3 passes)"), ("d4", "8 symmetries (8 passes)")),
                           "Test-time augmentation: segment flipped (or rotated) copies too and average the "
                           "probabilities: better masks at 3× or 8× the time with the shipped models (trained "
                           "with flips and rotations). Auto uses flips for those, and none after a quick "
                           "fine-tune on slices of a volume, which learns which side the anatomy is on.")
        form.addRow("TTA", self.tta)
        self._card_window: tuple[float, float] | None = None
        self._window_shown = False
        self.set_card_window(None)
        self.set_volume(0)

    def show_layer(self, layer: Any, card_window: bool) -> None:
        """Describe ``layer``; show the CT window for CT-like data (or a card with a window); set the scope."""
        if layer is None:
            self.info.setText("No image layer: open an image or File > Open Sample.")
            self.show_window(False)
            self.set_volume(0)
            return
        data = image_data(layer)
        try:
            layout = layer_layout(layer)
        except ValueError as exc:
            self.info.setText(f"⚠ {exc}")
            self.show_window(False)
            self.set_volume(0)
            return
        lead = lead_ndim(layer)
        kind = _KINDS[layout] if not lead else (
            f"time series / channels: the time point or channel shown in the viewer, {_KINDS[layout]}")
        self.info.setText(f"{' × '.join(map(str, data.shape))} {data.dtype} ({kind})")
        ct = isinstance(data, np.ndarray) and looks_like_ct(data)
        self.show_window(bool(ct or card_window))
        self.set_volume(spatial_shape(layer)[lead] if layout.startswith("3d") else 0)

    # --- CT window -------------------------------------------------------------------------------------
    def set_card_window(self, window: tuple[float, float] | None) -> None:
        """Fill the presets; preselect the checkpoint's own window (by preset name when it matches one)."""
        self._card_window = tuple(window) if window else None  # type: ignore[assignment]
        self.window.blockSignals(True)
        self.window.clear()
        card_text = "checkpoint (L {:g} W {:g})".format(*window) if window else "checkpoint (auto intensity range)"
        self.window.addItem(card_text, WINDOW_CARD)
        for name, (level, width) in WINDOWS.items():
            self.window.addItem(f"{name} (L {level:g} W {width:g})", name)
        self.window.addItem("custom", WINDOW_CUSTOM)
        match = next((n for n, w in WINDOWS.items() if window and tuple(w) == tuple(window)), None)
        self.window.setCurrentIndex(self.window.findData(match) if match else 0)
        self.window.blockSignals(False)
        self._on_window()

    def _on_window(self, *_: Any) -> None:
        key = self.window.currentData()
        custom = key == WINDOW_CUSTOM
        shown = WINDOWS.get(key) or (self._card_window if key == WINDOW_CARD else None)
        if shown:
            self.level.setValue(shown[0])
            self.width.setValue(shown[1])
        self.level.setEnabled(custom)
        self.width.setEnabled(custom)
        self._lw_row.setVisible(self._window_shown and bool(shown or custom))

    def window_value(self) -> tuple[float, float] | None:
        """The window to pass to the model; None means the checkpoint's own preprocessing."""
        key = self.window.currentData()
        if key == WINDOW_CARD:
            return None
        if key == WINDOW_CUSTOM:
            return float(self.level.value()), float(self.width.value())
        return tuple(float(v) for v in WINDOWS[key])  # type: ignore[return-value]

    def show_window(self, visible: bool) -> None:
        """Show the CT window rows (level/width only when a window is chosen, not the auto range)."""
        self._window_shown = visible
        for w in self._window_rows[:2]:
            w.setVisible(visible)
        self._on_window()

    # --- scope ---------------------------------------------------------------------------------------------
    def set_volume(self, n_slices: int) -> None:
        """Enable the scope for a volume of ``n_slices`` (0 for a 2D image)."""
        volume = n_slices > 0
        self.scope.setEnabled(volume)
        if not volume:
            self.scope.setCurrentIndex(0)
        for spin in (self.z0, self.z1):
            spin.setRange(0, max(0, n_slices - 1))
        self.z1.setValue(max(0, n_slices - 1))
        self._on_scope()

    def _on_scope(self, *_: Any) -> None:
        ranged = self.scope.currentData() == SCOPE_RANGE
        for w in (self.z0, self._dash, self.z1):
            w.setVisible(ranged)

    def z_range(self) -> tuple[int, int]:
        """The z-range as (start, stop) with stop exclusive."""
        a, b = sorted((self.z0.value(), self.z1.value()))
        return a, b + 1


class PostPanel(QGroupBox):
    """Post-processing options (applied to every result; changes preview on the last result)."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Post-processing", parent)
        form = QFormLayout(self)
        self.largest = QCheckBox("keep largest component per class")
        self.largest.setToolTip("Keep only the biggest connected object of each class (e.g. one liver).")
        self.fill = QCheckBox("fill holes")
        self.fill.setToolTip("Fill background holes enclosed by a class (never overwrites another class).")
        self.min_size = QSpinBox(minimum=0, maximum=10_000_000, singleStep=10)
        self.min_size.setSuffix(" px")
        self.min_size.setSpecialValueText("off")
        self.min_size.setToolTip("Remove objects smaller than this many pixels (voxels in 3D mode); 0 = off.")
        self.mode = QComboBox()
        self.mode.addItem("3D (whole volume)", "3d")
        self.mode.addItem("per slice", "slice")
        self.mode.setToolTip("For volumes: connected components in 3D, or in each slice separately.")
        self.preview = QCheckBox("preview on the last result")
        self.preview.setChecked(True)
        self.preview.setToolTip(
            "Re-apply the options to the last segmentation as soon as they change (one undo step each), "
            "without running the network again."
        )
        form.addRow(self.largest)
        form.addRow(self.fill)
        form.addRow("Remove objects <", self.min_size)
        form.addRow("Components", self.mode)
        self._mode_rows = [self.mode, form.labelForField(self.mode)]
        form.addRow(self.preview)
        for signal in (self.largest.toggled, self.fill.toggled, self.min_size.valueChanged,
                       self.mode.currentIndexChanged):
            signal.connect(self.changed)

    def show_volume_options(self, volume: bool) -> None:
        """The 3D / per-slice choice only means something for volumes."""
        for w in self._mode_rows:
            w.setVisible(volume)

    def options(self) -> PostprocessOptions:
        return PostprocessOptions(largest=self.largest.isChecked(), fill_holes=self.fill.isChecked(),
                                  min_size=int(self.min_size.value()), mode=str(self.mode.currentData()))

    def set_options(self, opts: PostprocessOptions) -> None:
        self.largest.setChecked(opts.largest)
        self.fill.setChecked(opts.fill_holes)
        self.min_size.setValue(opts.min_size)
        self.mode.setCurrentIndex(max(0, self.mode.findData(opts.mode)))
