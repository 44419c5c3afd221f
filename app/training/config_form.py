"""A form built from a config dataclass: one editor per field, help text as tooltip; and the New Run dialog.

The same ``param(...)`` metadata that drives the CLI flags drives this form: numeric ranges
become spin-box limits, ``choices`` become a combo box, booleans a check box. Decimal numbers are
typed as text and shown in their shortest exact form (``5e-07``, ``0.2``), so any value round-trips.
Some fields have pickers, typing your own value still possible: ``env_id`` (the registered
environments the workbench supports, searchable), ``prompt_set`` (the built-in sets, with a preview),
``prompt_ids`` (the project's prompts, chosen from a list), model settings (the bundled model, the
project's artefacts and the model folders the person added, :class:`ArtefactBox`). ``config()`` validates and returns the
dataclass, or raises ``ConfigError`` listing every problem; the dialog shows those problems and keeps
the form open.

:class:`RunDialog` lists the jobs grouped by what they do (``rlhf_core.registry.JOB_GROUPS``), each
with its one-line summary; the chosen job's form scrolls while Start and Cancel stay in view.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from PySide6.QtCore import QModelIndex, QRect, QSize, Qt
from PySide6.QtGui import QFont, QGuiApplication, QPalette, QValidator
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QCheckBox,
    QComboBox,
    QCompleter,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.plain import plain_label, tip
from rlhf_core import config as cfg
from rlhf_core.kinds import TEXT_POLICY

_INT_LIMIT = 2_147_483_647
#: the job the New Run dialog shows when nothing else is asked for and the project suggests none
DEFAULT_JOB = "rollouts"


# ------------------------------------------------------------------------------------ numbers
def format_float(value: float) -> str:
    """The shortest text that reads back as exactly ``value``: ``5e-07``, ``0.2``, ``1e-05``, ``3.0``."""
    return repr(float(value))


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_NUMBER_PREFIX = re.compile(r"[+-]?(\d*\.?\d*)([eE][+-]?\d*)?")


class FloatValidator(QValidator):
    """Decimal or scientific notation; a number outside [low, high] is kept as typed (Intermediate) so that
    validation can say which limit it breaks."""

    def __init__(self, low: float | None, high: float | None, parent=None):
        super().__init__(parent)
        self.low, self.high = low, high

    def validate(self, text: str, pos: int):  # noqa: D102 - Qt's API
        stripped = text.strip()
        if _NUMBER.fullmatch(stripped):
            value = float(stripped)
            inside = math.isfinite(value) and (self.low is None or value >= self.low) and \
                (self.high is None or value <= self.high)
            return (QValidator.State.Acceptable if inside else QValidator.State.Intermediate), text, pos
        if _NUMBER_PREFIX.fullmatch(stripped):
            return QValidator.State.Intermediate, text, pos
        return QValidator.State.Invalid, text, pos


class FloatEdit(QLineEdit):
    """A decimal number as text: ``5e-07`` shows as typed and reads back exactly (a spin box with six
    decimals showed 0.000000). ``value()`` is the float, or the text when it is not a number yet (the
    config's validation then says so)."""

    def __init__(self, value: float, low: float | None = None, high: float | None = None, parent=None, *,
                 off: tuple[float, str] | None = None):
        super().__init__(parent)
        self.off = off  # (value, words): that value shows as an empty field with the words as placeholder
        if off is not None:
            self.setPlaceholderText(off[1])
        self.setValidator(FloatValidator(low, high, self))
        self.setValue(value)

    def setValue(self, value: float | str) -> None:  # noqa: N802 - the spin box's name, kept for callers
        text = str(value).strip()
        if isinstance(value, str) and not _NUMBER.fullmatch(text):
            self.setText(text)  # not a number (yet): kept as typed, and validation says what is wrong
            return
        if self.off is not None and float(value) == self.off[0]:
            self.setText("")
            return
        self.setText(format_float(float(value)))

    def value(self) -> float | str:
        text = self.text().strip()
        if not text and self.off is not None:
            return self.off[0]
        return float(text) if _NUMBER.fullmatch(text) else text


# ------------------------------------------------------------------------------------ pickers
class _EditableBox(QComboBox):
    """A combo box a value can also be typed into; ``text``/``setText`` as on a line edit."""

    def text(self) -> str:
        return self.currentText().strip()

    def setText(self, text: str) -> None:  # noqa: N802 - QLineEdit's name, kept for callers
        index = self.findData(text)
        if index >= 0:
            self.setCurrentIndex(index)
        self.setEditText(text)


class EnvIdBox(_EditableBox):
    """Environment id: the registered environments the workbench supports (classic control, Box2D,
    MuJoCo, Atari), newest version of each, by family; type to search (any part of the id), or type your
    own id (``module:Env-v0``)."""

    def __init__(self, value: str, parent=None):
        super().__init__(parent)
        from rlhf_core.envs.make import supported_env_ids  # start-up: gymnasium loads when a form needs it

        self.setEditable(True)
        self.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.setMaxVisibleItems(20)
        family = None
        for env_id, fam in supported_env_ids():
            if family is not None and fam != family:
                self.insertSeparator(self.count())
            family = fam
            self.addItem(env_id, env_id)
            self.setItemData(self.count() - 1, fam, Qt.ItemDataRole.ToolTipRole)
        self.env_ids = [self.itemData(i) for i in range(self.count()) if self.itemData(i)]
        completer = QCompleter(self.env_ids, self)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
        completer.setMaxVisibleItems(15)
        self.setCompleter(completer)
        self.lineEdit().setPlaceholderText("type to search, e.g. cheetah")
        self.setText(value)


class PromptSetBox(_EditableBox):
    """A built-in prompt set (editable: another name can be typed; empty means "only the prompt ids"), with
    a preview label of what it holds (title, count, an example; categories and more in its tooltip). The
    form shows ``row`` (this box over its preview)."""

    def __init__(self, value: str, parent=None):
        super().__init__(parent)
        from rlhf_core.text.prompts import builtin_sets

        self.sets = {s.name: s for s in builtin_sets()}
        self.setEditable(True)
        self.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        for info in self.sets.values():
            self.addItem(info.name, info.name)
            self.setItemData(self.count() - 1, f"{info.title}: {info.count} prompts", Qt.ItemDataRole.ToolTipRole)
        self.lineEdit().setPlaceholderText("none: only the prompt ids")
        self.preview = plain_label()
        self.preview.setObjectName("prompt_set_preview")
        self.preview.setWordWrap(True)
        self.preview.setStyleSheet("color: #555;")
        self.row = QWidget()
        layout = QVBoxLayout(self.row)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self)
        layout.addWidget(self.preview)
        self.editTextChanged.connect(self._update_preview)
        self.setText(value)

    def setText(self, text: str) -> None:  # noqa: N802 - QLineEdit's name, kept for callers
        super().setText(text)
        self._update_preview()

    def _update_preview(self, *_args) -> None:
        name = self.text()
        self.preview.setToolTip("")
        if not name:
            self.preview.setText("No prompt set: only the prompt ids are used.")
            return
        info = self.sets.get(name)
        if info is None:
            known = ", ".join(self.sets) or "none"
            self.preview.setText(f"There is no built-in prompt set {name!r} (built in: {known}).")
            return
        from rlhf_core.text.prompts import load_builtin_set

        cats = ", ".join(f"{c} {n}" for c, n in sorted(info.categories.items()))
        first = [r.text for r in load_builtin_set(name)[:5]]
        self.preview.setText(f"{info.title} · {info.count} prompts\ne.g. “{_one_line(first[0], 70)}”" if first
                             else f"{info.title} · no prompts")
        self.preview.setToolTip(tip("\n".join([f"{info.title}: {info.count} prompts ({cats})", info.description, ""]
                                              + [f"• {_one_line(t, 100)}" for t in first])))


def _default_text(info: cfg.FieldInfo) -> str:
    """What an empty model setting means, from its help text's ``('' = ...)``, or "(default)"."""
    match = re.search(r"\(''\s*(?:=|:)\s*([^)]*)\)", info.help) or re.search(r"Empty: ([^,.]*)", info.help)
    return f"({match.group(1).strip()})" if match else "(default)"


def _one_line(text: str, limit: int) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def parse_ids(text: str) -> list:
    """Ids typed as ``3, 5, 8-10`` (or the old ``[3, 5]``): whole numbers become ints, ranges are expanded,
    anything else is kept as text so that validation names it."""
    out: list = []
    for token in re.split(r"[,\s]+", text.strip().strip("[]")):
        token = token.strip().strip("'\"")
        if not token:
            continue
        lo, sep, hi = token.partition("-")
        if sep and lo.isdecimal() and hi.isdecimal() and len(lo) < 10 and len(hi) < 10 and \
                0 < int(hi) - int(lo) < 10_000:
            out.extend(range(int(lo), int(hi) + 1))
        elif token.isdecimal() and len(token) <= 19:
            out.append(int(token))
        else:
            out.append(token)
    return out


class PromptIdsEdit(QLineEdit):
    """Ids of the project's prompts: typed (``3, 5, 8-10``) or ticked in a list ("Choose…", beside it in
    ``row``)."""

    def __init__(self, value, parent=None):
        super().__init__(parent)
        self.project = None
        self.setPlaceholderText("e.g. 3, 5, 8-10")
        self.choose_button = QPushButton("Choose…")
        self.choose_button.clicked.connect(self.choose)
        self.row = QWidget()
        layout = QHBoxLayout(self.row)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self, 1)
        layout.addWidget(self.choose_button)
        self.set_ids(value)
        self.set_project(None)

    def set_project(self, project) -> None:
        self.project = project
        self.choose_button.setEnabled(project is not None)
        self.choose_button.setToolTip("Tick prompts of this project" if project is not None
                                      else "Open a project to choose among its prompts")

    def ids(self) -> list:
        return parse_ids(self.text())

    def set_ids(self, ids) -> None:
        """A list of ids, or text as typed (``"3, 5"``, ``"[3, 5]"``)."""
        ids = parse_ids(ids) if isinstance(ids, str) else list(ids or [])
        self.setText(", ".join(str(i) for i in ids))

    def choose(self) -> bool:
        """The list of the project's prompts; True if the person chose (OK)."""
        if self.project is None:
            return False
        dialog = PromptPickerDialog(self.project.prompts(), self.ids(), self)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.set_ids(dialog.chosen_ids())
            return True
        return False


def _narrow(box: QComboBox) -> None:
    """Long artefact names must not widen the form: the box takes the form's width, names are elided."""
    box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    box.setMinimumContentsLength(10)


def artefact_label(artefact) -> str:
    """``helpful v2 — text policy · run 7 · reward/mean 0.41``: what a picker shows of an artefact."""
    parts = [artefact.kind_word]
    if artefact.run_id is not None:
        parts.append(f"run {artefact.run_id}")
    if artefact.headline is not None:
        parts.append(f"{artefact.headline[0].rsplit('/', 1)[-1]} {artefact.headline[1]:.3g}")
    return _one_line(f"{artefact.name} — {' · '.join(parts)}", 120)


class ArtefactBox(QComboBox):
    """A setting that takes a model: the project's artefacts of its kinds by name (newest first, stored as
    ``checkpoint:ID`` so a rename does not change what a run used), the default (empty), a folder chosen with
    "…", or any reference typed (``run:7``, a name, a path).

    A text model setting also lists the model folders the person added (any family transformers loads as
    a causal LM): "…" checks a chosen folder at once (``check_model_folder``; a problem is shown in one
    sentence under the box and the folder is not added) and remembers it per user (``Settings``); the
    arrow beside "…" forgets one."""

    def __init__(self, value: str, kinds: tuple, default_text: str, parent=None, *, settings=None):
        super().__init__(parent)
        self.kinds = kinds
        self.default_text = default_text
        self.remembers = TEXT_POLICY in kinds
        self._settings = settings
        self._project = None
        _narrow(self)
        self.setEditable(True)
        self.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.lineEdit().setPlaceholderText(default_text)
        self.folder_button = QToolButton()
        self.folder_button.setText("…")
        self.folder_button.clicked.connect(self.choose_folder)
        if self.remembers:
            self.folder_button.setToolTip("Add a model folder: checked now, then listed in every model setting "
                                          "(the arrow: forget one)")
            self.folder_button.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)
            self.folder_menu = QMenu(self.folder_button)
            self.folder_menu.aboutToShow.connect(self._fill_folder_menu)
            self.folder_button.setMenu(self.folder_menu)
        else:
            self.folder_button.setToolTip("Choose a model folder outside the project")
        self.problem = plain_label()
        self.problem.setObjectName("model_folder_problem")
        self.problem.setWordWrap(True)
        self.problem.setStyleSheet("color: #b00020;")
        self.problem.hide()
        self.editTextChanged.connect(lambda _text: self.problem.hide())  # a new choice: the old problem is gone
        self.row = QWidget()
        outer = QVBoxLayout(self.row)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(2)
        line = QHBoxLayout()
        line.addWidget(self, 1)
        line.addWidget(self.folder_button)
        outer.addLayout(line)
        outer.addWidget(self.problem)
        self._value = str(value)
        self.set_project(None)

    @property
    def settings(self):
        if self._settings is None:
            from app.settings import Settings

            self._settings = Settings()
        return self._settings

    def set_project(self, project) -> None:
        current = self.text() if self.count() else self._value
        self._project = project
        self.blockSignals(True)
        self.clear()
        self.addItem(self.default_text, "")
        if project is not None:
            from rlhf_core.store.artefacts import list_artefacts  # start-up: the store loads with a project

            for artefact in list_artefacts(project, self.kinds):
                self.addItem(artefact_label(artefact), artefact.reference)
                self.setItemData(self.count() - 1, str(artefact.path), Qt.ItemDataRole.ToolTipRole)
        folders = self.settings.model_folders() if self.remembers else []
        if folders:
            self.insertSeparator(self.count())
        for folder in folders:
            self.addItem(model_folder_label(folder), folder)
            self.setItemData(self.count() - 1, folder, Qt.ItemDataRole.ToolTipRole)
        self.blockSignals(False)
        self.setText(current)

    def text(self) -> str:
        """What the setting gets: the chosen artefact's reference, '' for the default, or the typed text."""
        typed = self.currentText().strip()
        index = self.findText(typed)
        if index >= 0:
            return str(self.itemData(index) or "")
        return typed

    def setText(self, text: str) -> None:  # noqa: N802 - QLineEdit's name, kept for callers
        text = str(text or "")
        index = self.findData(text)
        if index >= 0:
            self.setCurrentIndex(index)
        else:
            self.setEditText(text)
        self.lineEdit().setCursorPosition(0)  # a long name shows its start

    def choose_folder(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(self, "Model folder")
        if not folder:
            return
        if self.remembers:
            self.add_folder(folder)
        else:
            self.setText(folder)

    def add_folder(self, folder: str) -> bool:
        """Check ``folder`` and, when it holds a usable causal LM, remember and choose it; otherwise show the
        problem in one sentence and change nothing. True when added."""
        from rlhf_core.text.model import ModelError, check_model_folder  # start-up: imports transformers

        path = os.path.abspath(os.path.expanduser(str(folder)))
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            check_model_folder(path)
            problem = None
        except ModelError as exc:
            problem = str(exc)
        except OSError as exc:
            problem = f"{path} could not be read ({exc.strerror or exc})."
        finally:
            QApplication.restoreOverrideCursor()
        self.problem.setText(problem or "")
        self.problem.setVisible(problem is not None)
        if problem is not None:
            return False
        self.settings.add_model_folder(path)
        self.set_project(self._project)
        self.setText(path)
        return True

    def forget_folder(self, folder: str) -> None:
        """Drop ``folder`` from the remembered list (the folder itself is left alone)."""
        chosen = self.text() == folder
        self.settings.forget_model_folder(folder)
        self.set_project(self._project)
        if chosen:
            self.setText("")

    def _fill_folder_menu(self) -> None:
        self.folder_menu.clear()
        self.folder_menu.addAction("Add folder…", self.choose_folder)
        folders = self.settings.model_folders()
        if folders:
            self.folder_menu.addSeparator()
        for folder in folders:
            action = self.folder_menu.addAction(f"Forget {_one_line(folder, 80)}")
            action.triggered.connect(lambda _checked=False, f=folder: self.forget_folder(f))


def model_folder_label(folder: str) -> str:
    """``tiny-gpt2 — your folder · gpt2``: what a picker shows of a model folder the person added."""
    path = Path(folder)
    try:
        family = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        family = None
    if not path.is_dir():
        return _one_line(f"{path.name} — your folder · missing", 120)
    return _one_line(f"{path.name} — your folder" + (f" · {family}" if isinstance(family, str) else ""), 120)


class ArtefactIdBox(QComboBox):
    """A setting that takes a checkpoint id: the project's artefacts of its kinds by name; 0 when the field
    allows it (the job's own default, e.g. the newest)."""

    def __init__(self, value: int, kinds: tuple, allow_zero: bool, parent=None):
        super().__init__(parent)
        self.kinds = kinds
        self.allow_zero = allow_zero
        _narrow(self)
        self._value = int(value)
        self.set_project(None)

    def set_project(self, project) -> None:
        current = self.value() if self.count() else self._value
        self.clear()
        if self.allow_zero:
            self.addItem("(the job's default: the newest that fits)", 0)
        if project is not None:
            from rlhf_core.store.artefacts import list_artefacts  # start-up: the store loads with a project

            for artefact in list_artefacts(project, self.kinds):
                self.addItem(artefact_label(artefact), artefact.id)
        self.setValue(current)

    def value(self) -> int:
        data = self.currentData()
        return int(data) if data is not None else self._value

    def setValue(self, value: int) -> None:  # noqa: N802 - QSpinBox's name, kept for callers
        self._value = int(value)
        index = self.findData(int(value))
        if index < 0 and value:
            self.addItem(f"checkpoint {int(value)} (not in this project)", int(value))
            index = self.count() - 1
        self.setCurrentIndex(max(index, 0))


class PromptPickerDialog(QDialog):
    """Tick prompts (plain text, first line) with a filter box."""

    def __init__(self, prompts: list[dict], chosen, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Choose prompts")
        self.resize(640, 480)
        chosen = {i for i in chosen if isinstance(i, int)}
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("filter")
        self.filter.textChanged.connect(self._apply_filter)
        self.list = QListWidget()
        for p in prompts:
            item = QListWidgetItem(f"{p['id']}: {_one_line(p['text'], 120)}")  # an item view shows plain text
            item.setData(Qt.ItemDataRole.UserRole, p["id"])
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if p["id"] in chosen else Qt.CheckState.Unchecked)
            self.list.addItem(item)
        empty = plain_label("This project has no prompts yet: import some (File ▸ Import Prompts (JSONL or CSV)…) "
                            "or use a prompt set.")
        empty.setVisible(not prompts)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.filter)
        layout.addWidget(empty)
        layout.addWidget(self.list, 1)
        layout.addWidget(buttons)

    def _apply_filter(self, text: str) -> None:
        needle = text.strip().lower()
        for i in range(self.list.count()):
            item = self.list.item(i)
            item.setHidden(bool(needle) and needle not in item.text().lower())

    def chosen_ids(self) -> list[int]:
        return [int(self.list.item(i).data(Qt.ItemDataRole.UserRole)) for i in range(self.list.count())
                if self.list.item(i).checkState() == Qt.CheckState.Checked]


# ------------------------------------------------------------------------------------ the form
class ConfigForm(QWidget):
    def __init__(self, config_cls: type, initial: Any | None = None, parent: QWidget | None = None, *,
                 project=None):
        super().__init__(parent)
        self.config_cls = config_cls
        self.editors: dict[str, QWidget] = {}
        self.infos = {f.name: f for f in cfg.fields(config_cls)}
        layout = QFormLayout(self)
        layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        initial = initial or config_cls()
        advanced = [info for info in self.infos.values() if info.advanced]
        advanced_form = QFormLayout() if advanced else None
        for info in self.infos.values():
            editor = self._make_editor(info, getattr(initial, info.name))
            editor.setToolTip(tip(info.help))
            editor.setObjectName(f"field_{info.name}")
            label = plain_label(info.label)
            label.setToolTip(tip(info.help))
            (advanced_form if info.advanced else layout).addRow(label, getattr(editor, "row", editor))
            self.editors[info.name] = editor
        self.advanced_button: QToolButton | None = None
        if advanced_form is not None:  # settings few people change: folded away, one click opens them
            self.advanced_box = QWidget()
            self.advanced_box.setLayout(advanced_form)
            advanced_form.setContentsMargins(0, 0, 0, 0)
            self.advanced_box.hide()
            self.advanced_button = QToolButton()
            self.advanced_button.setText(f"Advanced ({len(advanced)})")
            self.advanced_button.setCheckable(True)
            self.advanced_button.setArrowType(Qt.ArrowType.RightArrow)
            self.advanced_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            self.advanced_button.setAutoRaise(True)
            self.advanced_button.toggled.connect(self._show_advanced)
            layout.addRow(self.advanced_button)
            layout.addRow(self.advanced_box)
        self.set_project(project)
        # a config with FORM_SWITCH = "track" shows a field whose help starts "text:" only when track is text
        self.sections: dict[str, str] = {}
        switch = getattr(config_cls, "FORM_SWITCH", None)
        if switch in self.editors and self.infos[switch].choices:
            for name, info in self.infos.items():
                head = info.help.split(":", 1)[0].split(",", 1)[0].strip()
                if name != switch and head in self.infos[switch].choices:
                    self.sections[name] = head
            self.editors[switch].currentIndexChanged.connect(self._show_section)
            self._show_section()

    def _row(self, name: str):
        """(the form layout that holds setting ``name``, its row's field widget)."""
        widget = getattr(self.editors[name], "row", self.editors[name])
        for form in (self.layout(), self.advanced_box.layout() if self.advanced_button is not None else None):
            if form is not None and form.indexOf(widget) >= 0:
                return form, widget
        raise KeyError(name)

    def is_shown(self, name: str) -> bool:
        """Whether setting ``name``'s row is shown (folded-away advanced rows count as shown)."""
        form, widget = self._row(name)
        return form.isRowVisible(widget)

    def _show_section(self, *_args) -> None:
        """Only the settings that apply to the switch's choice (a control round hides the text settings)."""
        chosen = self.editors[self.config_cls.FORM_SWITCH].currentData()
        for name, section in self.sections.items():
            form, widget = self._row(name)
            form.setRowVisible(widget, section == chosen)

    def _show_advanced(self, on: bool) -> None:
        self.advanced_box.setVisible(on)
        self.advanced_button.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)

    def set_project(self, project) -> None:
        """The open project (the prompt-ids picker lists its prompts, the model pickers its artefacts)."""
        for editor in self.editors.values():
            if isinstance(editor, (PromptIdsEdit, ArtefactBox, ArtefactIdBox)):
                editor.set_project(project)

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
        if info.type is int and info.artefact:
            return ArtefactIdBox(int(value), info.artefact, allow_zero=info.min is None or info.min <= 0)
        if info.type is str and info.artefact:
            return ArtefactBox(str(value), info.artefact, _default_text(info))
        if info.type is int:
            spin = QSpinBox()
            spin.setRange(int(info.min) if info.min is not None else -_INT_LIMIT,
                          int(min(info.max, _INT_LIMIT)) if info.max is not None else _INT_LIMIT)
            spin.setValue(int(value))
            spin.setGroupSeparatorShown(True)
            if info.default_text and info.min is not None and info.default == info.min:
                spin.setSpecialValueText(info.default_text)  # e.g. lora_rank -1: "auto"
            return spin
        if info.type is float and info.default_text:  # a sentinel default, e.g. min_demo_return -1e9: "off"
            return FloatEdit(float(value), info.min, info.max, off=(float(info.default), info.default_text))
        if info.type is float:
            return FloatEdit(float(value), info.min, info.max)
        if info.type is str and info.name == "env_id":
            return EnvIdBox(str(value))
        if info.type is str and info.name == "prompt_set":
            return PromptSetBox(str(value))
        if info.type is list and info.each == "id" and info.name == "prompt_ids":
            return PromptIdsEdit(list(value))
        line = QLineEdit()
        line.setText(json.dumps(value) if isinstance(value, (list, dict)) else str(value))
        return line

    def values(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, editor in self.editors.items():
            info = self.infos[name]
            if isinstance(editor, QComboBox) and not isinstance(editor, (EnvIdBox, PromptSetBox, ArtefactBox,
                                                                         ArtefactIdBox)):
                out[name] = editor.currentData()
            elif isinstance(editor, QCheckBox):
                out[name] = editor.isChecked()
            elif isinstance(editor, (QSpinBox, FloatEdit, ArtefactIdBox)):
                out[name] = editor.value()
            elif isinstance(editor, PromptIdsEdit):
                out[name] = editor.ids()
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
        if isinstance(editor, QComboBox) and not isinstance(editor, (EnvIdBox, PromptSetBox, ArtefactBox,
                                                                     ArtefactIdBox)):
            editor.setCurrentIndex(editor.findData(value))
        elif isinstance(editor, QCheckBox):
            editor.setChecked(bool(value))
        elif isinstance(editor, (QSpinBox, FloatEdit, ArtefactIdBox)):
            editor.setValue(value)
        elif isinstance(editor, PromptIdsEdit):
            editor.set_ids(value)
        else:
            editor.setText(str(value))


# ------------------------------------------------------------------------------------ the dialog
_GROUP_ROLE = Qt.ItemDataRole.UserRole + 1  # a heading row of the job list
_SUMMARY_ROLE = Qt.ItemDataRole.UserRole + 2


class _JobDelegate(QStyledItemDelegate):
    """Job rows: the title, and under it the one-line summary in grey; group rows: a bold heading."""

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:  # noqa: N802
        line = option.fontMetrics.height()
        if index.data(_GROUP_ROLE):
            return QSize(200, line + 14)
        return QSize(200, 2 * line + 10)

    def paint(self, painter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        painter.save()
        rect = option.rect
        line = option.fontMetrics.height()
        if index.data(_GROUP_ROLE):
            font = QFont(option.font)
            font.setBold(True)
            painter.setFont(font)
            painter.setPen(option.palette.color(QPalette.ColorGroup.Active, QPalette.ColorRole.WindowText))
            painter.drawText(rect.adjusted(6, 8, -6, 0), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop,
                             str(index.data(Qt.ItemDataRole.DisplayRole)))
            painter.restore()
            return
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        if selected:
            painter.fillRect(rect, option.palette.highlight())
        title_color = option.palette.color(QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text)
        painter.setPen(title_color)
        painter.setFont(option.font)
        metrics = option.fontMetrics
        text_rect = QRect(rect.left() + 16, rect.top() + 4, rect.width() - 22, line)
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignLeft,
                         metrics.elidedText(str(index.data(Qt.ItemDataRole.DisplayRole)), Qt.TextElideMode.ElideRight,
                                            text_rect.width()))
        painter.setPen(title_color if selected else option.palette.color(QPalette.ColorRole.PlaceholderText))
        summary_rect = text_rect.translated(0, line + 1)
        painter.drawText(summary_rect, Qt.AlignmentFlag.AlignLeft,
                         metrics.elidedText(str(index.data(_SUMMARY_ROLE) or ""), Qt.TextElideMode.ElideRight,
                                            summary_rect.width()))
        painter.restore()


class RunDialog(QDialog):
    """Pick a job (listed by what it does) and its settings, then start it. Shows validation problems
    instead of closing. ``project`` (default: the parent's ``project``) fills the pickers and chooses the
    job shown first when ``selected`` is None (the project's next useful job, see
    :func:`rlhf_core.analysis.next_steps.suggested_job`); ``initial``, a config of the selected job, fills its form."""

    def __init__(self, specs, selected=None, parent: QWidget | None = None, *, project=None, initial: Any = None):
        super().__init__(parent)
        self._initial = initial  # the settings the form of ``selected`` opens with (a config of its class)
        from rlhf_core.analysis.next_steps import suggested_job
        from rlhf_core.registry import JOB_GROUPS

        self.project = project if project is not None else getattr(parent, "project", None)
        self.specs = list(specs)
        self.setWindowTitle("New run")

        # the jobs, by group (in JOB_GROUPS order; a job of no known group under "Other")
        self.job_list = QListWidget()
        self.job_list.setObjectName("job_list")
        self.job_list.setItemDelegate(_JobDelegate(self.job_list))
        self.job_list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.job_list.setMinimumWidth(300)
        self._rows: dict[str, QListWidgetItem] = {}
        headings = {**JOB_GROUPS, "": "Other"}
        for group, heading in headings.items():
            members = sorted((s for s in self.specs if (s.group if s.group in JOB_GROUPS else "") == group),
                             key=lambda s: s.title.lower())
            if not members:
                continue
            head = QListWidgetItem(heading)
            head.setData(_GROUP_ROLE, True)
            head.setFlags(Qt.ItemFlag.NoItemFlags)
            self.job_list.addItem(head)
            for spec in members:
                item = QListWidgetItem(spec.title)
                item.setData(Qt.ItemDataRole.UserRole, spec.name)
                item.setData(_SUMMARY_ROLE, spec.summary or _one_line(spec.description, 100))
                item.setToolTip(tip(spec.description))
                self.job_list.addItem(item)
                self._rows[spec.name] = item

        self.title = plain_label()
        self.title.setStyleSheet("font-size: 15px; font-weight: 600;")
        self.intro = plain_label()
        self.intro.setWordWrap(True)
        self.intro.setStyleSheet("color: #444;")
        self.form: ConfigForm | None = None
        self.scroll = QScrollArea()
        self.scroll.setObjectName("form_scroll")
        self.scroll.setWidgetResizable(True)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.errors = plain_label()
        self.errors.setStyleSheet("color: #b00020;")
        self.errors.setWordWrap(True)
        self.errors.hide()
        # outside the scroll area: Start and Cancel stay in view however long the form is
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.start_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.start_button.setText("Start")
        self.buttons.accepted.connect(self._on_start)
        self.buttons.rejected.connect(self.reject)

        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(6, 0, 0, 0)
        right_layout.addWidget(self.title)
        right_layout.addWidget(self.intro)
        right_layout.addWidget(self.scroll, 1)
        right_layout.addWidget(self.errors)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.job_list)
        split.addWidget(right)
        split.setStretchFactor(1, 1)
        split.setSizes([450, 640])
        split.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.addWidget(split, 1)
        layout.addWidget(self.buttons)

        # fits the screen (a 1280x720 laptop included); the form scrolls inside
        screen = (parent.screen() if parent is not None else QGuiApplication.primaryScreen()).availableGeometry()
        self.resize(min(1120, int(screen.width() * 0.9)), min(700, int(screen.height() * 0.9)))

        self.result_config: Any = None
        self.job_list.currentItemChanged.connect(self._on_job_changed)
        first = selected if selected in self._rows else suggested_job(self.project)
        first = first if first in self._rows else DEFAULT_JOB if DEFAULT_JOB in self._rows else \
            next(iter(self._rows), None)
        if first is not None:
            self.job_list.setCurrentItem(self._rows[first])
            self.job_list.scrollToItem(self._rows[first])

    @property
    def spec(self):
        item = self.job_list.currentItem()
        name = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
        return next(s for s in self.specs if s.name == name)

    def select_job(self, name: str) -> None:
        self.job_list.setCurrentItem(self._rows[name])

    def _on_job_changed(self, current: QListWidgetItem | None, _previous=None) -> None:
        if current is None or current.data(Qt.ItemDataRole.UserRole) is None:
            return
        spec = self.spec
        self.title.setText(spec.title)
        self.intro.setText(spec.description)
        config_cls = spec.config_class()
        initial = self._initial if isinstance(self._initial, config_cls) else None
        self.form = ConfigForm(config_cls, initial, project=self.project)
        self.scroll.setWidget(self.form)  # the previous form is deleted with it
        self.scroll.verticalScrollBar().setValue(0)
        self.errors.hide()

    def _on_start(self) -> None:
        try:
            self.result_config = self.form.config()
        except cfg.ConfigError as exc:
            self.errors.setText("Please fix:\n" + str(exc))
            self.errors.show()
            return
        self.accept()
