"""Config dataclasses: one per job, help text on every field, validated, stored as JSON.

A job's config is a plain ``@dataclass`` whose fields are declared with :func:`param`::

    @dataclass
    class FooConfig:
        learning_rate: float = param(1e-3, "Adam learning rate.", min=0.0, min_inclusive=False)
        steps: int = param(200, "Optimisation steps.", min=1)
        loss: str = param("bt", "Loss to use.", choices=("bt", "hinge"))

The same declaration drives the CLI flags (:func:`add_arguments` / :func:`from_args`), the GUI
form and its tooltips (``app/training/config_form.py``), validation (:func:`validate`) and the JSON
stored with every run (:func:`to_dict` / :func:`from_dict`), so any run can be reproduced.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from rlhf_core import kinds
from rlhf_core.input_files import INT64_MAX, INT64_MIN, text_problem

T = TypeVar("T")

#: Whole numbers are stored in SQLite, whose integers have 64 bits.
INT_MIN, INT_MAX = INT64_MIN, INT64_MAX

#: Renamed config fields, per job: {old name: new name}. Every trainer uses the same name for the same
#: setting (TRL's where TRL has one). Old names still read from stored runs (:func:`upgrade_settings`)
#: and config files (:func:`from_dict`), and still work as deprecated CLI flags (:func:`add_arguments`).
RENAMED_FIELDS: dict[str, dict[str, str]] = {
    "text_reward_model": {"lr": "learning_rate", "model_path": "model",
                          "center_rewards": "center_rewards_coefficient"},
    "text_eval": {"prompts": "heldout_tasks"},
    "reward_model": {"lr": "learning_rate"},
    "bc": {"lr": "learning_rate"},
    "synthetic_preferences": {"lr": "learning_rate", "save_checkpoint": "save"},
}


def upgrade_settings(job: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` (a run's stored settings) with the old field names of ``job`` replaced by the new ones."""
    return _rename(data, RENAMED_FIELDS.get(job, {}))


def _rename(data: Mapping[str, Any], renames: Mapping[str, str]) -> dict[str, Any]:
    """Old keys -> new keys; where both are given, the new one wins."""
    return {renames.get(k, k): v for k, v in data.items() if not (k in renames and renames[k] in data)}


def old_names(config_cls: type) -> dict[str, str]:
    """{old name: new name} of ``config_cls``'s own renamed fields (its ``RENAMED_FROM``, one entry of
    :data:`RENAMED_FIELDS`): a job never accepts another job's old names."""
    return dict(getattr(config_cls, "RENAMED_FROM", {}))


class ConfigError(ValueError):
    """A config value is impossible. ``str(error)`` lists every problem, one per line."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def param(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    min_inclusive: bool = True,
    choices: Sequence[Any] | None = None,
    label: str | None = None,
    advanced: bool = False,
    each: str | None = None,
    subset_of: Sequence[str] | None = None,
    artefact: Sequence[str] | None = None,
    default_text: str | None = None,
) -> Any:
    """Declare a config field with its help text and constraints.

    ``each="id"``: a list field whose items are row ids (whole numbers from 1). ``subset_of``: a
    comma-separated text field whose every item must be one of these words. ``artefact``: the checkpoint
    kinds the field takes (a reference ``run:ID`` / ``checkpoint:ID`` / a name, or an id for int fields):
    the app shows a picker of the project's artefacts of these kinds. ``default_text``: words the app shows
    instead of the default when the default is a sentinel ("auto", "off"); for an int, the default must be
    its ``min``.
    """
    meta = {
        "help": help,
        "min": min,
        "max": max,
        "min_inclusive": min_inclusive,
        "choices": tuple(choices) if choices is not None else None,
        "label": label,
        "advanced": advanced,
        "each": each,
        "subset_of": tuple(subset_of) if subset_of is not None else None,
        "artefact": tuple(artefact) if artefact is not None else None,
        "default_text": default_text,
    }
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    name: str
    type: type
    default: Any
    help: str
    label: str
    min: float | None
    max: float | None
    min_inclusive: bool
    choices: tuple | None
    advanced: bool
    each: str | None = None
    subset_of: tuple | None = None
    artefact: tuple | None = None
    default_text: str | None = None


def fields(config_cls_or_obj: Any) -> list[FieldInfo]:
    """The declared fields of a config class (or instance), with their metadata."""
    cls = config_cls_or_obj if isinstance(config_cls_or_obj, type) else type(config_cls_or_obj)
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        out.append(
            FieldInfo(
                name=f.name,
                type=_base_type(hints.get(f.name, str)),
                default=default,
                help=meta.get("help", ""),
                label=meta.get("label") or f.name.replace("_", " ").capitalize(),
                min=meta.get("min"),
                max=meta.get("max"),
                min_inclusive=meta.get("min_inclusive", True),
                choices=meta.get("choices"),
                advanced=meta.get("advanced", False),
                each=meta.get("each"),
                subset_of=meta.get("subset_of"),
                artefact=meta.get("artefact") or kinds.FIELD_KINDS.get(f.name),
                default_text=meta.get("default_text"),
            )
        )
    return out


def _base_type(tp: Any) -> type:
    origin = typing.get_origin(tp)
    if origin is typing.Union or str(origin) == "types.UnionType":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0]) if args else str
    if origin in (list, tuple, Sequence):
        return list
    return tp if isinstance(tp, type) else str


def _show(value: Any, limit: int = 60) -> str:
    """``repr(value)``, shortened for a message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _field_problem(info: FieldInfo, value: Any) -> str | None:
    """Why ``value`` cannot be this field's value (type, range, choices), or None."""
    name = info.name
    if info.type is bool:
        return None if isinstance(value, bool) else f"{name}: expected true/false, got {_show(value)}"
    if info.type in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name}: expected a number, got {_show(value)}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{name}: must be a finite number, got {_show(value)}"
        if info.type is int and isinstance(value, float) and not value.is_integer():
            return f"{name}: expected a whole number, got {_show(value)}"
        if info.type is int and not INT_MIN <= value <= INT_MAX:
            return f"{name}: must be between {INT_MIN} and {INT_MAX}"
        if info.min is not None:
            if info.min_inclusive and value < info.min:
                return f"{name}: must be at least {info.min}, got {_show(value)}"
            if not info.min_inclusive and value <= info.min:
                return f"{name}: must be greater than {info.min}, got {_show(value)}"
        if info.max is not None and value > info.max:
            return f"{name}: must be at most {info.max}, got {_show(value)}"
    elif info.type is str:
        if value is None and info.default is None:
            return None
        if not isinstance(value, str):
            return f"{name}: expected text, got {_show(value)}"
        problem = text_problem(value)
        if problem:
            return f"{name}: {problem}"
        if info.subset_of is not None:
            unknown = [v.strip() for v in value.split(",") if v.strip() and v.strip() not in info.subset_of]
            if unknown:
                return (f"{name}: unknown {', '.join(map(repr, unknown))}; choose from "
                        f"{', '.join(info.subset_of)} (comma-separated)")
    elif info.type is list:
        if not isinstance(value, (list, tuple)):
            return f"{name}: expected a list, got {_show(value)}"
        for item in value:
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                return f"{name}: items must be numbers or text, got {_show(item)}"
            if isinstance(item, str) and text_problem(item):
                return f"{name}: {text_problem(item)}"
            if isinstance(item, float) and not math.isfinite(item):
                return f"{name}: numbers must be finite, got {_show(item)}"
            as_id = int(item) if isinstance(item, str) and item.strip().isdecimal() and len(item) <= 19 else item
            if info.each == "id" and not (isinstance(as_id, int) and 1 <= as_id <= INT_MAX):
                return f"{name}: {_show(item)} is not an id (ids are whole numbers from 1)"
            if isinstance(item, int) and not INT_MIN <= item <= INT_MAX:
                return f"{name}: numbers must be between {INT_MIN} and {INT_MAX}"
    if info.choices is not None and value not in info.choices:
        opts = ", ".join(repr(c) for c in info.choices)
        return f"{name}: must be one of {opts}, got {_show(value)}"
    return None


def validate(config: Any) -> None:
    """Raise :class:`ConfigError` listing every impossible value (types, ranges, choices).

    A config's own ``check()`` (rules across fields) runs too; if it fails on a value already
    reported as impossible, the field problems are what is reported.
    """
    problems = [p for info in fields(config) if (p := _field_problem(info, getattr(config, info.name)))]
    check = getattr(config, "check", None)  # cross-field rules a config may add
    if callable(check):
        try:
            problems.extend(check() or [])
        except Exception:  # a rule may trip over a value already reported as impossible: those suffice
            if not problems:
                raise
    if problems:
        raise ConfigError(problems)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def to_json(config: Any) -> str:
    return json.dumps(to_dict(config), sort_keys=True)


def from_dict(config_cls: type[T], data: Mapping[str, Any], *, strict: bool = True) -> T:
    """Build and validate a config from a mapping (e.g. the JSON stored with a run).

    Unknown keys are an error when ``strict`` (a typo must not silently become a default). Old names of
    renamed fields (:data:`RENAMED_FIELDS`) are read as the new ones.
    Ints given for float fields are accepted; values are otherwise taken as they are.
    """
    if not isinstance(data, Mapping):
        raise ConfigError([f"settings must be a JSON object of name: value pairs, got {describe_type(data)}"])
    data = _rename(data, old_names(config_cls))
    infos = {f.name: f for f in fields(config_cls)}
    unknown = sorted(map(str, set(data) - set(infos)))
    if unknown and strict:
        raise ConfigError([f"unknown setting {k!r} for {config_cls.__name__}" for k in unknown])
    kwargs = {}
    for key, value in data.items():
        if key not in infos:
            continue
        if infos[key].type is float and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:
                raise ConfigError([f"{key}: the number is too large"]) from None
        kwargs[key] = value
    config = config_cls(**kwargs)
    validate(config)
    return config


def describe_type(value: Any) -> str:
    return {list: "a list", str: "a string", bool: "true/false", type(None): "null", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def replace(config: T, **changes: Any) -> T:
    new = dataclasses.replace(config, **changes)
    validate(new)
    return new


def apply_presets(config: T, preset: Mapping[str, Any], ppo_keys: Sequence[str] = ("ppo",),
                  batch_field: str = "ppo_batch_size") -> tuple[T, dict[str, Any], dict[str, dict]]:
    """(config with an env's ``preset`` applied, what was applied, ``{ppo key: PPO overrides}``).

    Every field still at its declared default takes the preset's value, so a setting the user gives
    always wins (giving exactly the default cannot be told apart from giving nothing). Each of
    ``ppo_keys`` names PPO keyword overrides in the preset; its ``batch_size`` is the config's
    ``batch_field`` when that was given (not the default) or the preset has none."""
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(config)
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    changes = {k: v for k, v in preset.items()
               if k in defaults and k != "env_id" and getattr(config, k) == defaults[k]}
    config = dataclasses.replace(config, **changes)
    applied = dict(changes)
    ppo: dict[str, dict] = {}
    for key in ppo_keys:
        over = dict(preset.get(key, {}))
        if getattr(config, batch_field) != defaults[batch_field] or "batch_size" not in over:
            over["batch_size"] = getattr(config, batch_field)
        if key in preset:
            applied[key] = dict(over)
        ppo[key] = over
    return config, applied, ppo


# ---------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """Add one ``--flag`` per config field, with its help text and default."""
    group = parser.add_argument_group(f"{config_cls.__name__} settings")
    for info in fields(config_cls):
        flag = "--" + info.name.replace("_", "-")
        help_text = f"{info.help} (default: {info.default!r})".replace("%", "%%")  # argparse %-formats help
        if info.type is bool:
            group.add_argument(flag, dest=info.name, action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
        elif info.type is list:
            group.add_argument(flag, dest=info.name, type=parse_list, default=None,
                               help=help_text + " Comma-separated.")
        else:
            group.add_argument(flag, dest=info.name, type=info.type, default=None,
                               choices=info.choices, help=help_text)
    by_new = {new: old for old, new in old_names(config_cls).items()}
    for info in fields(config_cls):
        if info.name in by_new:  # the old flag: same value, a note on stderr, hidden from --help
            kwargs = ({"action": _DeprecatedBool} if info.type is bool else
                      {"action": _DeprecatedFlag, "type": parse_list if info.type is list else info.type,
                       "choices": info.choices})
            group.add_argument("--" + by_new[info.name].replace("_", "-"), dest=info.name, default=None,
                               help=argparse.SUPPRESS, **kwargs)


def _deprecation_note(option: str, dest: str) -> None:
    import sys

    new = ("--no-" if option.startswith("--no-") else "--") + dest.replace("_", "-")
    print(f"note: {option} is deprecated; use {new}", file=sys.stderr)


class _DeprecatedFlag(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        _deprecation_note(str(option_string), self.dest)
        setattr(namespace, self.dest, values)


class _DeprecatedBool(argparse.BooleanOptionalAction):
    def __call__(self, parser, namespace, values, option_string=None):
        _deprecation_note(str(option_string), self.dest)
        super().__call__(parser, namespace, values, option_string)


def parse_list(text: str) -> list:
    """A comma-separated command-line list; items that look like numbers become ints/floats."""
    out: list = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        for convert in (int, float):
            try:
                out.append(convert(part))
                break
            except ValueError:
                continue
        else:
            out.append(part)
    return out


def from_args(config_cls: type[T], args: argparse.Namespace) -> T:
    """The config given by parsed ``args`` (unset flags keep the dataclass defaults)."""
    data = {}
    for info in fields(config_cls):
        value = getattr(args, info.name, None)
        if value is None:
            continue
        if info.type is list and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        data[info.name] = value
    return from_dict(config_cls, data)
