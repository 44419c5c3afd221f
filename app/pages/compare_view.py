"""The Runs page's Compare tab: the ticked runs side by side (rlhf_core.analysis.compare), one column per run,
settings that differ highlighted; "Only differences" hides the settings they share."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QHeaderView, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from app.plain import plain_label, tip
from rlhf_core.analysis.compare import SECTIONS, CompareError, Comparison, compare_runs, format_value
from rlhf_core.store import Project

DIFFERS = QColor("#fff1c2")  # a setting whose values differ between the runs
HEADING = QColor("#eeeeee")


class CompareView(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.comparison: Comparison | None = None
        self.only_differences = QCheckBox("Only differences")
        self.only_differences.setToolTip("Hide the settings all compared runs share.")
        self.only_differences.setChecked(True)
        self.only_differences.toggled.connect(self._fill)
        self.hint = plain_label("Tick two or more runs in the table to compare them.")
        self.hint.setStyleSheet("color: #555;")
        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)  # runs share the width
        top = QHBoxLayout()
        top.addWidget(self.hint, 1)
        top.addWidget(self.only_differences)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.table, 1)

    def show_runs(self, project: Project | None, run_ids: list[int]) -> None:
        self.comparison = None
        if project is not None and len(run_ids) >= 2:
            try:
                self.comparison = compare_runs(project, run_ids)
            except CompareError as exc:
                self.hint.setText(str(exc))
        if self.comparison is None and len(run_ids) < 2:
            self.hint.setText("Tick two or more runs in the table to compare them.")
        self._fill()

    def visible_rows(self):
        if self.comparison is None:
            return []
        hide_same = self.only_differences.isChecked()
        return [row for row in self.comparison.rows if not (hide_same and row.section == "settings" and not row.differs)]

    def _fill(self, *_args) -> None:
        c = self.comparison
        self.table.clear()
        if c is None:
            self.table.setRowCount(0)
            self.table.setColumnCount(0)
            return
        differing = sum(1 for row in c.section("settings") if row.differs)
        self.hint.setText(f"{len(c.run_ids)} runs; {differing} of {len(c.section('settings'))} settings differ "
                          "(highlighted).")
        self.table.setColumnCount(len(c.run_ids))
        self.table.setHorizontalHeaderLabels([f"run {run_id}" for run_id in c.run_ids])  # the job is a row
        for col, text in enumerate(c.headers):
            self.table.horizontalHeaderItem(col).setToolTip(tip(text))
        rows = self.visible_rows()
        labels: list[str] = []
        self.table.setRowCount(0)
        bold = QFont()
        bold.setBold(True)
        for section in SECTIONS:
            members = [row for row in rows if row.section == section]
            if not members:
                continue
            at = self.table.rowCount()
            self.table.insertRow(at)
            labels.append(section.upper())
            for col in range(len(c.run_ids)):
                cell = QTableWidgetItem("")
                cell.setBackground(QBrush(HEADING))
                self.table.setItem(at, col, cell)
            for row in members:
                at = self.table.rowCount()
                self.table.insertRow(at)
                labels.append(row.name)
                for col, value in enumerate(row.values):
                    text = format_value(value)
                    cell = QTableWidgetItem(text)
                    cell.setToolTip(tip(f"{row.name}: {text}"))
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        cell.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                    if row.differs and row.section == "settings":
                        cell.setBackground(QBrush(DIFFERS))
                        cell.setFont(bold)
                    self.table.setItem(at, col, cell)
        self.table.setVerticalHeaderLabels(labels)
