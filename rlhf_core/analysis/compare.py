"""Runs side by side: their settings (the ones that differ marked), their results' numbers and each metric's
final value, so that two or more runs of a study read as one table (the Runs page's Compare tab, the CLI's
``compare``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Sequence

from rlhf_core.store import Project

SECTIONS = ("run", "settings", "result", "final metrics")


class CompareError(ValueError):
    """Runs that cannot be compared; ``str(error)`` says why, for a person."""


@dataclass
class Row:
    section: str  # one of SECTIONS
    name: str
    values: list[Any]  # one per run; None where the run has no such value
    differs: bool = False


@dataclass
class Comparison:
    run_ids: list[int]
    headers: list[str]  # "run 7 · dpo"
    rows: list[Row] = field(default_factory=list)

    def section(self, name: str) -> list[Row]:
        return [row for row in self.rows if row.section == name]

    def to_dict(self) -> dict:
        return {"run_ids": self.run_ids, "headers": self.headers,
                "rows": [{"section": r.section, "name": r.name, "values": r.values, "differs": r.differs}
                         for r in self.rows]}


def _same(values: list[Any]) -> bool:
    keys = [json.dumps(v, sort_keys=True, default=str) for v in values]
    return all(k == keys[0] for k in keys)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _duration(run: dict) -> float | None:
    try:
        return (datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["started_at"])).total_seconds()
    except (TypeError, ValueError, KeyError):
        return None


def compare_runs(project: Project, run_ids: Sequence[int]) -> Comparison:
    """The runs ``run_ids`` (in that order) side by side. Settings rows are every setting any of them has
    (``differs`` where the values are not all equal, a missing one counting as different); result rows are the
    results' top-level numbers; metric rows each metric's value at its last step."""
    ids = list(dict.fromkeys(int(i) for i in run_ids))
    if len(ids) < 2:
        raise CompareError("Choose at least two runs to compare.")
    runs = []
    for run_id in ids:
        run = project.get_run(run_id)
        if run is None:
            raise CompareError(f"The project has no run {run_id}.")
        runs.append(run)
    out = Comparison(ids, [f"run {r['id']} · {r['kind']}" for r in runs])

    def add(section: str, name: str, values: list[Any]) -> None:
        out.rows.append(Row(section, name, values, differs=not _same(values)))

    add("run", "job", [r["kind"] for r in runs])
    add("run", "status", [r["status"] for r in runs])
    add("run", "duration (s)", [_duration(r) for r in runs])
    configs = [r["config"] if isinstance(r["config"], dict) else {} for r in runs]
    for name in dict.fromkeys(k for c in configs for k in c):
        add("settings", name, [c.get(name) for c in configs])
    results = [r["result"] if isinstance(r["result"], dict) else {} for r in runs]
    for name in dict.fromkeys(k for res in results for k, v in res.items() if _number(v)):
        add("result", name, [res.get(name) if _number(res.get(name)) else None for res in results])
    finals = [project.last_metrics(r["id"]) for r in runs]
    for name in sorted({k for f in finals for k in f}):
        values = [f[name][1] if name in f else None for f in finals]
        add("final metrics", name, [None if isinstance(v, float) and not math.isfinite(v) else v for v in values])
    return out


def format_value(value: Any) -> str:
    """A cell's text: numbers to 4 significant digits, lists and dicts as compact JSON, None as '–'."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)
