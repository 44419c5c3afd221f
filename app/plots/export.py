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
