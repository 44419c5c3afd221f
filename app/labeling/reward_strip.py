"""A thin plot of the learned reward per step under a clip, with a marker on the current frame."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QWidget


class RewardStrip(pg.PlotWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent, background="w")
        self.setFixedHeight(70)
        self.setMenuEnabled(False)
        self.setMouseEnabled(x=False, y=False)
        self.hideButtons()
        self.getPlotItem().hideAxis("bottom")
        self.getPlotItem().getAxis("left").setWidth(34)
        self.curve = self.plot(pen=pg.mkPen("#1f77b4", width=1))
        self.zero = pg.InfiniteLine(pos=0, angle=0, pen=pg.mkPen("#bbb"))
        self.addItem(self.zero)
        self.cursor = pg.InfiniteLine(pos=0, angle=90, pen=pg.mkPen("#d62728"))
        self.addItem(self.cursor)
        self.values = np.zeros(0)

    def set_values(self, values: np.ndarray | None) -> None:
        self.values = np.zeros(0) if values is None else np.asarray(values, float)
        self.curve.setData(np.arange(len(self.values)), self.values)
        if len(self.values):
            self.setXRange(0, max(1, len(self.values) - 1), padding=0.02)

    def set_index(self, index: int) -> None:
        self.cursor.setValue(index)
