"""Plots out of the app: PNG, SVG and CSV from a visible **Export…** button (pyqtgraph's own right-click
export is hidden, and its SVG exporter fails on our plots).

The whole canvas (every plot with its legend) is rendered through Qt: PNG at twice the screen size
(sharp in a paper or on a high-density screen), SVG with :class:`QSvgGenerator` (scatter markers
drawn as paths, not cached pixmaps). The CSV is the data behind the curves, written by the view.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtWidgets import QFileDialog, QMenu, QToolButton, QWidget

PNG_SCALE = 2.0
FORMATS = {"png": ("PNG image…", "PNG image (*.png)"), "svg": ("SVG drawing…", "SVG drawing (*.svg)"),
           "csv": ("CSV data…", "CSV data (*.csv)")}


def canvas_rect(graphics: pg.GraphicsLayoutWidget) -> QRectF:
    """The part of the scene the plots and their legends cover (may be taller than the visible widget)."""
    return graphics.ci.sceneBoundingRect().united(graphics.sceneRect())


def save_png(graphics: pg.GraphicsLayoutWidget, path: str | Path, scale: float = PNG_SCALE) -> QSize:
    """The canvas as a PNG ``scale`` times its size on screen, on white; returns the image size."""
    rect = canvas_rect(graphics)
    image = QImage(max(1, round(rect.width() * scale)), max(1, round(rect.height() * scale)),
                   QImage.Format.Format_ARGB32)
    image.setDevicePixelRatio(scale)  # drawn in screen units: text keeps its size relative to the plots
    image.fill(QColor("white"))
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    graphics.scene().render(painter, QRectF(0, 0, image.width() / scale, image.height() / scale), rect)
    painter.end()
    if not image.save(str(path), "PNG"):
        raise OSError("Qt could not save the image there (a read-only folder or a full disk?)")
    return image.size()


def save_svg(graphics: pg.GraphicsLayoutWidget, path: str | Path, title: str = "Metrics") -> None:
    from PySide6.QtSvg import QSvgGenerator  # only when exporting (kept in the bundle: pyinstaller.spec)

    rect = canvas_rect(graphics)
    generator = QSvgGenerator()
    generator.setFileName(str(path))
    generator.setSize(QSize(round(rect.width()), round(rect.height())))
    generator.setViewBox(QRectF(0, 0, rect.width(), rect.height()))
    generator.setResolution(96)
    generator.setTitle(title)
    generator.setDescription("RLHF Workbench")
    scatters = [item for item in graphics.scene().items() if isinstance(item, pg.ScatterPlotItem)]
    cached = [(item, item.opts.get("useCache", True)) for item in scatters]
    for item, _ in cached:
        item.opts["useCache"] = False  # markers as vector paths (cached ones become bitmaps)
    painter = QPainter(generator)
    try:
        graphics.scene().render(painter, QRectF(0, 0, rect.width(), rect.height()), rect)
    finally:
        painter.end()
        for item, was in cached:
            item.opts["useCache"] = was
    if not Path(path).is_file():
        raise OSError("Qt could not save the drawing there (a read-only folder or a full disk?)")


def ask_path(parent: QWidget, fmt: str, suggested: str) -> str | None:
    """A save dialog for ``fmt`` (png/svg/csv); the suffix is added when the name has none."""
    label, pattern = FORMATS[fmt]
    path, _ = QFileDialog.getSaveFileName(parent, f"Export the plots as {label.rstrip('…')}", suggested, pattern)
    if not path:
        return None
    return path if Path(path).suffix else f"{path}.{fmt}"


def export_button(parent: QWidget, on_export: Callable[[str], None]) -> QToolButton:
    """An **Export…** tool button whose menu offers PNG, SVG and CSV; ``on_export(fmt)`` does the rest."""
    button = QToolButton(parent)
    button.setText("Export…")
    button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
    button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
    button.setToolTip("Save the plots shown: a PNG image, an SVG drawing, or their data as CSV.")
    menu = QMenu(button)
    for fmt, (label, _) in FORMATS.items():
        action = menu.addAction(label)
        action.setObjectName(f"export_{fmt}")
        action.triggered.connect(lambda _=False, f=fmt: on_export(f))
    button.setMenu(menu)
    return button


# ----------------------------------------------------------------------- any view's plots
def _plot_widgets(container: QWidget) -> list[pg.GraphicsView]:
    if isinstance(container, (pg.PlotWidget, pg.GraphicsLayoutWidget)):
        return [container]
    return container.findChildren(pg.PlotWidget) + container.findChildren(pg.GraphicsLayoutWidget)


def _plot_items(widget: pg.GraphicsView) -> list[pg.PlotItem]:
    if isinstance(widget, pg.PlotWidget):
        return [widget.getPlotItem()]
    return [item for item in widget.ci.items if isinstance(item, pg.PlotItem)]


def series_rows(container: QWidget) -> list[tuple[str, str, float, float]]:
    """(plot title, series name, x, y) of every curve and scatter in the container's plots."""
    rows = []
    for item in (i for w in _plot_widgets(container) for i in _plot_items(w)):
        title = item.titleLabel.text if item.titleLabel is not None else ""
        for n, data in enumerate(item.listDataItems()):
            xs, ys = data.getData()
            if xs is None or ys is None:
                continue
            name = data.name() or f"series {n + 1}"
            rows += [(title, name, float(x), float(y)) for x, y in zip(xs, ys)]
    return rows


def save_widget(container: QWidget, path: str | Path, fmt: str, title: str) -> None:
    """The container (one or several plots with their labels) as PNG (twice its size) or SVG, or its
    plots' data as CSV."""
    import csv

    if fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["plot", "series", "x", "y"])
            writer.writerows(series_rows(container))
        return
    scatters = [item for w in _plot_widgets(container) for item in w.scene().items()
                if isinstance(item, pg.ScatterPlotItem)]
    cached = [(item, item.opts.get("useCache", True)) for item in scatters]
    size = container.size()
    try:
        for item, _ in cached:
            item.opts["useCache"] = False  # markers as vector paths
        if fmt == "png":
            image = QImage(round(size.width() * PNG_SCALE), round(size.height() * PNG_SCALE),
                           QImage.Format.Format_ARGB32)
            image.setDevicePixelRatio(PNG_SCALE)
            image.fill(QColor("white"))
            painter = QPainter(image)
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            container.render(painter)
            painter.end()
            if not image.save(str(path), "PNG"):
                raise OSError("Qt could not save the image there (a read-only folder or a full disk?)")
            return
        from PySide6.QtSvg import QSvgGenerator  # only when exporting

        generator = QSvgGenerator()
        generator.setFileName(str(path))
        generator.setSize(size)
        generator.setViewBox(QRectF(0, 0, size.width(), size.height()))
        generator.setResolution(96)
        generator.setTitle(title)
        generator.setDescription("RLHF Workbench")
        painter = QPainter(generator)
        try:
            container.render(painter)
        finally:
            painter.end()
        if not Path(path).is_file():
            raise OSError("Qt could not save the drawing there (a read-only folder or a full disk?)")
    finally:
        for item, was in cached:
            item.opts["useCache"] = was


def with_export(plot: QWidget, title: str) -> QWidget:
    """``plot`` under a thin bar whose **Export…** saves it (PNG / SVG) or its data (CSV)."""
    from PySide6.QtWidgets import QHBoxLayout, QVBoxLayout

    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(0)
    bar = QHBoxLayout()
    bar.addStretch(1)
    button = view_export_button(plot, title, box)
    button.setObjectName("plot_export")
    bar.addWidget(button)
    layout.addLayout(bar)
    layout.addWidget(plot, 1)
    box.export_button = button
    return box


def view_export_button(container: QWidget, title: str, parent: QWidget | None = None) -> QToolButton:
    """An **Export…** button for any view's plots: PNG / SVG of ``container`` as shown, CSV of their data;
    failures in a message box, in words."""
    from app.plain import message_box

    owner = parent or container

    def export(fmt: str) -> None:
        path = ask_path(owner, fmt, f"{title.lower().replace(' ', '-')}.{fmt}")
        if path is None:
            return
        try:
            save_widget(container, path, fmt, title)
        except OSError as exc:
            message_box(owner, "Nothing was exported", f"{path} could not be written: {exc.strerror or exc}").exec()

    button = export_button(owner, export)
    button.setToolTip("Save these plots: a PNG image, an SVG drawing, or their data as CSV.")
    return button
