"""Every metric plot leaves the app from a visible Export… button: PNG (decodes, twice the canvas size), SVG
(parses as XML, vector curves), CSV (every point shown); a path that cannot be written is answered in words."""

from __future__ import annotations

import csv
import math
import xml.etree.ElementTree as ET

import pytest
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QFileDialog, QMessageBox

from app.plots.export import PNG_SCALE, canvas_rect
from app.plots.metric_plot import MetricPlotView


@pytest.fixture
def view(qtbot):
    v = MetricPlotView()
    qtbot.addWidget(v)
    v.resize(700, 500)
    v.show()
    return v


def _load(view: MetricPlotView) -> dict:
    run1 = {"reward/mean": (list(range(40)), [0.1 * s for s in range(40)]),
            "kl/token_mean": (list(range(40)), [0.01 * s for s in range(40)]),
            "train/loss": ([0, 1, 2, 3], [1.0, float("nan"), 0.5, 0.25]),
            "reward_model/m0_loss": ([0, 1, 2], [0.7, 0.6, 0.5])}
    run2 = {"reward/mean": (list(range(10)), [-0.2 * s for s in range(10)])}
    view.load_run(1, run1, label="run 1")
    view.load_run(2, run2, label="run 2")
    view.load_run(3, {"reward/mean": ([0], [9.0])})  # not shown: not exported
    view.set_visible_runs([1, 2])
    view.redraw()
    return {1: run1, 2: run2}


def _export(monkeypatch, view, fmt: str, path) -> None:
    """Choose ``fmt`` in the Export… menu; the save dialog answers ``path`` (named without its suffix)."""
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(path.with_suffix("")), "")))
    assert view.export_button.isVisible() and view.export_button.isEnabled()
    action = next(a for a in view.export_button.menu().actions() if a.objectName() == f"export_{fmt}")
    action.trigger()


def test_png_svg_and_csv_from_the_export_menu(view, monkeypatch, tmp_path):
    data = _load(view)
    rect = canvas_rect(view.graphics)
    assert rect.height() >= 4 * 200  # four plots, stacked: the whole canvas, not the visible part

    _export(monkeypatch, view, "png", tmp_path / "plots.png")
    image = QImage(str(tmp_path / "plots.png"))
    assert not image.isNull()
    assert (image.width(), image.height()) == (round(rect.width() * PNG_SCALE), round(rect.height() * PNG_SCALE))
    colours = {image.pixelColor(x, y).name() for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
    assert "#ffffff" in colours and len(colours) > 5  # white ground, curves and text

    _export(monkeypatch, view, "svg", tmp_path / "plots.svg")
    root = ET.parse(tmp_path / "plots.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert len(root.findall(".//{http://www.w3.org/2000/svg}path")) + len(
        root.findall(".//{http://www.w3.org/2000/svg}polyline")) > 10
    assert "reward_model" in "".join(root.itertext())

    _export(monkeypatch, view, "csv", tmp_path / "plots.csv")
    with open(tmp_path / "plots.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["run", "key", "unit", "step", "value"]
    got = {}
    for r in rows:
        steps, values = got.setdefault((int(r["run"]), r["key"]), ([], []))
        steps.append(int(r["step"]))
        values.append(float(r["value"]) if r["value"] else math.nan)
    want = {(run, key): series for run, metrics in data.items() for key, series in metrics.items()}
    assert set(got) == set(want)
    for k, (steps, values) in want.items():
        assert got[k][0] == steps and all(a == b or (math.isnan(a) and math.isnan(b))
                                          for a, b in zip(got[k][1], values)), k
    assert {r["unit"] for r in rows if r["key"] == "train/loss"} == {"loss"}


def test_nothing_to_export_and_an_unwritable_path(view, monkeypatch, tmp_path, qtbot):
    assert not view.export_button.isEnabled()  # no plots yet
    _load(view)
    boxes = []
    monkeypatch.setattr(QMessageBox, "exec", lambda box: boxes.append((box.windowTitle(), box.text())) or 0)
    _export(monkeypatch, view, "png", tmp_path / "missing" / "plots.png")
    _export(monkeypatch, view, "csv", tmp_path / "missing" / "plots.csv")
    assert [title for title, _ in boxes] == ["Nothing was exported"] * 2
    assert all(text == f"The folder {tmp_path / 'missing'} does not exist." for _, text in boxes)
    assert not (tmp_path / "missing").exists()
    (tmp_path / "taken.csv").mkdir()  # a folder where the file should go
    _export(monkeypatch, view, "csv", tmp_path / "taken.csv")
    assert boxes[-1][0] == "Nothing was exported" and "could not be written: Is a directory." in boxes[-1][1]
