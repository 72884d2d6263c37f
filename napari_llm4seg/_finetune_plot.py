"""Live training curves for the Fine-tune widget: training loss (top) and validation Dice (bottom), pyqtgraph."""
from __future__ import annotations

from typing import Any

import pyqtgraph as pg
from qtpy.QtWidgets import QVBoxLayout, QWidget

#: metric name -> (row, curve colour, axis title)
CURVES = {"loss": (0, (66, 165, 245), "loss"), "val_dice": (1, (239, 83, 80), "val Dice")}


class TrainingPlot(QWidget):
    """Two stacked plots sharing the step axis; :meth:`add` appends a point of a metric ("loss", "val_dice")."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.view = pg.GraphicsLayoutWidget()
        self.view.setMinimumHeight(180)
        self.view.setMaximumHeight(240)
        self.view.setToolTip("Training loss per step (top) and Dice on the held-out validation items (bottom, "
                             "0–1, higher is better). Drag to pan, wheel to zoom, right-click for options.")
        lay.addWidget(self.view)
        self.points: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in CURVES}
        self.curves: dict[str, Any] = {}
        self.plots: list[Any] = []
        for name, (row, color, title) in CURVES.items():
            plot = self.view.addPlot(row=row, col=0)
            plot.setLabel("left", title)
            plot.getAxis("left").enableAutoSIPrefix(False)
            plot.getAxis("left").setWidth(42)
            plot.showGrid(x=True, y=True, alpha=0.25)
            plot.setMouseEnabled(x=True, y=False)
            pen = pg.mkPen(color=color, width=2)
            self.curves[name] = plot.plot([], [], pen=pen, symbol="o" if name == "val_dice" else None,
                                          symbolSize=5, symbolBrush=color, symbolPen=None)
            self.plots.append(plot)
        self.plots[1].setLabel("bottom", "step")
        self.plots[1].setXLink(self.plots[0])
        self.plots[1].setYRange(0.0, 1.0, padding=0.02)
        self.plots[1].enableAutoRange(axis="y", enable=False)
        self.empty = pg.TextItem("no validation items", color=(160, 160, 160), anchor=(0.5, 0.5))
        self.plots[1].addItem(self.empty)
        self.empty.setVisible(False)

    def clear(self) -> None:
        """Remove every point (a new run starts)."""
        for name, (xs, ys) in self.points.items():
            xs.clear()
            ys.clear()
            self.curves[name].setData([], [])
        self.empty.setVisible(False)

    def add(self, name: str, step: float, value: float) -> None:
        """Append ``(step, value)`` to the curve of ``name`` (other metric names are ignored)."""
        if name not in self.points:
            return
        xs, ys = self.points[name]
        xs.append(float(step))
        ys.append(float(value))
        self.curves[name].setData(xs, ys)

    def set_total(self, steps: int) -> None:
        """Show the whole run's step range on the x axis."""
        self.plots[0].setXRange(0, max(1, steps), padding=0.02)

    def show_no_validation(self, shown: bool) -> None:
        """Say in the Dice plot that there is nothing to validate on."""
        self.empty.setPos(max(1.0, self.plots[0].viewRange()[0][1]) / 2, 0.5)
        self.empty.setVisible(shown)
