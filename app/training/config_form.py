"""A form built from a config dataclass: one editor per field, help text as tooltip.

The same ``param(...)`` metadata that drives the CLI flags drives this form: numeric ranges
become spin-box limits, ``choices`` become a combo box, booleans a check box. ``config()``
validates and returns the dataclass, or raises ``ConfigError`` listing every problem; the dialog
shows those problems and keeps the form open.
"""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.plain import plain_label, tip
from rlhf_core import config as cfg

_INT_LIMIT = 2_147_483_647


class ConfigForm(QWidget):
    def __init__(self, config_cls: type, initial: Any | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.config_cls = config_cls
        self.editors: dict[str, QWidget] = {}
        self.infos = {f.name: f for f in cfg.fields(config_cls)}
        layout = QFormLayout(self)
        initial = initial or config_cls()
        for info in self.infos.values():
            editor = self._make_editor(info, getattr(initial, info.name))
            editor.setToolTip(tip(info.help))
            editor.setObjectName(f"field_{info.name}")
            label = plain_label(info.label)
            label.setToolTip(tip(info.help))
            layout.addRow(label, editor)
            self.editors[info.name] = editor

    def _make_editor(self, info: cfg.FieldInfo, value: Any) -> QWidget:
        if info.choices is not None:
            box = QComboBox()
            for choice in info.choices:
                box.addItem(str(choice), choice)
            box.setCurrentIndex(max(0, list(info.choices).index(value)) if value in info.choices else 0)
            return box
        if info.type is bool:
            check = QCheckBox()
            check.setChecked(bool(value))
            return check
        if info.type is int:
            spin = QSpinBox()
            spin.setRange(int(info.min) if info.min is not None else -_INT_LIMIT,
                          int(min(info.max, _INT_LIMIT)) if info.max is not None else _INT_LIMIT)
            spin.setValue(int(value))
            spin.setGroupSeparatorShown(True)
            return spin
        if info.type is float:
            spin = QDoubleSpinBox()
            spin.setDecimals(6)
            spin.setRange(float(info.min) if info.min is not None else -1e12,
                          float(info.max) if info.max is not None else 1e12)
            spin.setSingleStep(_step_for(value))
            spin.setValue(float(value))
            return spin
        line = QLineEdit()
        line.setText(json.dumps(value) if isinstance(value, (list, dict)) else str(value))
        return line

    def values(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, editor in self.editors.items():
            info = self.infos[name]
            if isinstance(editor, QComboBox):
                out[name] = editor.currentData()
            elif isinstance(editor, QCheckBox):
                out[name] = editor.isChecked()
            elif isinstance(editor, (QSpinBox, QDoubleSpinBox)):
                out[name] = editor.value()
            else:
                text = editor.text()
                if info.type is list:
                    try:
                        out[name] = json.loads(text)
                    except json.JSONDecodeError:
                        out[name] = [t.strip() for t in text.split(",") if t.strip()]
                else:
                    out[name] = text
        return out

    def config(self) -> Any:
        """The validated config; raises ``ConfigError`` with every problem."""
        return cfg.from_dict(self.config_cls, self.values())

    def set_value(self, name: str, value: Any) -> None:
        editor = self.editors[name]
        if isinstance(editor, QComboBox):
            editor.setCurrentIndex(editor.findData(value))
        elif isinstance(editor, QCheckBox):
            editor.setChecked(bool(value))
        elif isinstance(editor, (QSpinBox, QDoubleSpinBox)):
            editor.setValue(value)
        else:
            editor.setText(str(value))


def _step_for(value: float) -> float:
    v = abs(float(value))
    if v == 0:
        return 0.1
    mag = 10 ** int(f"{v:e}".split("e")[1])
    return mag / 10 if mag >= 1 else mag


class RunDialog(QDialog):
    """Pick a job and its settings, then start it. Shows validation problems instead of closing."""

    def __init__(self, specs, selected=None, parent: QWidget | None = None):
        super().__init__(parent)
        self.specs = list(specs)
        self.setWindowTitle("New run")
        self.setMinimumWidth(520)
        self.job_box = QComboBox()
        for spec in self.specs:
            self.job_box.addItem(spec.title, spec.name)
        self.intro = plain_label()
        self.intro.setWordWrap(True)
        self.intro.setStyleSheet("color: #444;")
        self.form_holder = QVBoxLayout()
        self.form: ConfigForm | None = None
        self.errors = plain_label()
        self.errors.setStyleSheet("color: #b00020;")
        self.errors.setWordWrap(True)
        self.errors.hide()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Start")
        buttons.accepted.connect(self._on_start)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.job_box)
        layout.addWidget(self.intro)
        layout.addLayout(self.form_holder)
        layout.addWidget(self.errors)
        layout.addWidget(buttons)
        self.result_config: Any = None
        self.job_box.currentIndexChanged.connect(self._on_job_box_changed)
        index = next((i for i, s in enumerate(self.specs) if selected and s.name == selected), 0)
        self.job_box.setCurrentIndex(index)
        self._on_job_box_changed(index)

    @property
    def spec(self):
        return self.specs[self.job_box.currentIndex()]

    def _on_job_box_changed(self, index: int) -> None:
        if self.form is not None:
            self.form.setParent(None)
            self.form.deleteLater()
        self.intro.setText(self.spec.description)
        self.form = ConfigForm(self.spec.config_class())
        self.form_holder.addWidget(self.form)
        self.errors.hide()

    def _on_start(self) -> None:
        try:
            self.result_config = self.form.config()
        except cfg.ConfigError as exc:
            self.errors.setText("Please fix:\n" + str(exc))
            self.errors.show()
            return
        self.accept()
