"""What a person set on the pages, remembered per project: every settings form on a page (e.g. Generate's)
and the view toggles listed in :data:`TOGGLES`. The main window saves them (``app.settings``, keyed by the
project's folder) when they change, when another project opens and when it closes, and sets them again
when the project is opened; a project never opened before gets the pages' defaults."""

from __future__ import annotations

import json
from typing import Any, Callable

from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QSpinBox, QWidget

from app.training.config_form import ConfigForm

#: (page name in app.pages.PAGES, attribute path from the page to a QCheckBox): view toggles kept per project
TOGGLES: tuple[tuple[str, str], ...] = (
    ("clips", "reveal_box"),  # Reveal true returns after each choice
    ("clips", "strip_box"),  # Show learned reward
    ("rank", "reveal_box"),  # Reveal sources and true returns
    ("text", "pairs.diff_box"),  # Highlight word differences
    ("text", "ranking.reveal_box"),  # Reveal sources
)


def toggle(pages: dict[str, QWidget], page: str, path: str) -> QCheckBox:
    obj: Any = pages[page]
    for name in path.split("."):
        obj = getattr(obj, name)
    if not isinstance(obj, QCheckBox):
        raise TypeError(f"{page}.{path} is not a check box")
    return obj


def forms(pages: dict[str, QWidget]) -> dict[str, ConfigForm]:
    """Every settings form on the pages, by ``page/ConfigClass`` (a numbered suffix if a page has two)."""
    out: dict[str, ConfigForm] = {}
    for page_name, page in pages.items():
        for form in page.findChildren(ConfigForm):
            key = f"{page_name}/{form.config_cls.__name__}"
            n = 2
            while key in out:
                key, n = f"{page_name}/{form.config_cls.__name__}#{n}", n + 1
            out[key] = form
    return out


def capture(pages: dict[str, QWidget]) -> dict:
    """The current forms and toggles as JSON-able values."""
    return {
        "toggles": {f"{page}.{path}": toggle(pages, page, path).isChecked() for page, path in TOGGLES},
        "forms": {key: form.values() for key, form in forms(pages).items()},
    }


def restore(pages: dict[str, QWidget], views: dict, defaults: dict) -> None:
    """Set the pages to ``views`` (what was saved for a project), ``defaults`` where it says nothing.
    A value the page cannot take any more (a choice since removed, a wrong type) keeps the default."""
    saved_toggles = views.get("toggles") if isinstance(views.get("toggles"), dict) else {}
    for page, path in TOGGLES:
        key = f"{page}.{path}"
        value = saved_toggles.get(key, defaults["toggles"].get(key))
        if isinstance(value, bool):
            toggle(pages, page, path).setChecked(value)
    saved_forms = views.get("forms") if isinstance(views.get("forms"), dict) else {}
    for key, form in forms(pages).items():
        values = dict(defaults["forms"].get(key, {}))
        if isinstance(saved_forms.get(key), dict):
            values.update(saved_forms[key])
        for name, value in values.items():
            if name in form.editors:
                _set(form, name, value)


def _set(form: ConfigForm, name: str, value: Any) -> None:
    editor = form.editors[name]
    if isinstance(editor, QComboBox):
        if editor.findData(value) >= 0:
            form.set_value(name, value)
    elif isinstance(editor, QCheckBox):
        if isinstance(value, bool):
            form.set_value(name, value)
    elif isinstance(editor, QSpinBox):
        if isinstance(value, int) and not isinstance(value, bool):
            form.set_value(name, value)
    elif isinstance(editor, QDoubleSpinBox):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            form.set_value(name, float(value))
    elif isinstance(editor, QLineEdit):
        form.set_value(name, json.dumps(value) if isinstance(value, (list, dict)) else str(value))


def watch(pages: dict[str, QWidget], changed: Callable[[], None]) -> None:
    """Call ``changed`` whenever a remembered form field or toggle changes."""
    for page, path in TOGGLES:
        toggle(pages, page, path).toggled.connect(lambda _=None: changed())
    for form in forms(pages).values():
        for editor in form.editors.values():
            if isinstance(editor, QComboBox):
                editor.currentIndexChanged.connect(lambda _=None: changed())
            elif isinstance(editor, QCheckBox):
                editor.toggled.connect(lambda _=None: changed())
            elif isinstance(editor, (QSpinBox, QDoubleSpinBox)):
                editor.valueChanged.connect(lambda _=None: changed())
            elif isinstance(editor, QLineEdit):
                editor.textChanged.connect(lambda _=None: changed())
