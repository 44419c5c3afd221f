"""Every plot of every page has a visible Export… (PNG twice its size, SVG, CSV of the data behind it)."""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET

import pyqtgraph as pg
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QToolButton

from app.labeling.reward_strip import RewardStrip
from app.plots.export import save_widget, series_rows, with_export
from app.plots.metric_plot import MetricPlotView


def test_a_plot_exports_png_svg_and_its_data(qtbot, tmp_path):
    plot = pg.PlotWidget(background="w")
    plot.setTitle("Win rate")
    plot.plot([1, 2, 3], [0.5, 0.25, 0.75], name="by RM")
    plot.addItem(pg.ScatterPlotItem([1.5], [0.1], name="one point"))
    box = with_export(plot, "Win rate")
    qtbot.addWidget(box)
    box.resize(400, 300)
    box.show()
    save_widget(plot, tmp_path / "p.png", "png", "Win rate")
    image = QImage(str(tmp_path / "p.png"))
    assert (image.width(), image.height()) == (2 * plot.width(), 2 * plot.height())
    save_widget(plot, tmp_path / "p.svg", "svg", "Win rate")
    assert ET.parse(tmp_path / "p.svg").getroot().tag.endswith("svg")
    save_widget(plot, tmp_path / "p.csv", "csv", "Win rate")
    rows = list(csv.reader(open(tmp_path / "p.csv", encoding="utf-8")))
    assert rows[0] == ["plot", "series", "x", "y"]
    assert rows[1:] == [["Win rate", "by RM", "1.0", "0.5"], ["Win rate", "by RM", "2.0", "0.25"],
                        ["Win rate", "by RM", "3.0", "0.75"], ["Win rate", "one point", "1.5", "0.1"]]
    assert box.export_button.menu() is not None and [a.objectName() for a in box.export_button.menu().actions()] \
        == ["export_png", "export_svg", "export_csv"]


def test_every_page_plot_has_an_export_button(window):
    missing, checked = [], 0
    for name, page in window.pages.items():
        for plot in page.findChildren(pg.PlotWidget) + page.findChildren(pg.GraphicsLayoutWidget):
            if isinstance(plot, RewardStrip):  # the labelling views' reward strip: a glance, not a figure
                continue
            holder, found = plot.parentWidget(), False
            while holder is not None and holder is not page and not found:
                if isinstance(holder, MetricPlotView):
                    found = holder.export_button is not None
                else:
                    found = any(b.objectName() == "plot_export" and b.parentWidget() is holder
                                for b in holder.findChildren(QToolButton))
                holder = holder.parentWidget()
            checked += 1
            if not found:
                missing.append(f"{name}: {type(plot).__name__} {plot.objectName()}")
    assert not missing, missing
    assert checked >= 10  # the pages' plots were found (metric plots, rounds, sweeps, text RL, analyses)


def test_series_rows_read_a_layout_of_plots():
    graphics = pg.GraphicsLayoutWidget()
    item = graphics.addPlot(row=0, col=0, title="Learned vs true return")
    item.plot([0, 1], [2, 3], name="demos")
    assert series_rows(graphics) == [("Learned vs true return", "demos", 0.0, 2.0),
                                     ("Learned vs true return", "demos", 1.0, 3.0)]
