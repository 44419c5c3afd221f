"""A run's metrics as CSV or JSON, for a spreadsheet, pandas or a paper's plot (``export-metrics``).

CSV: one row per logged value, in the order logged: ``run,step,key,unit,value,wall_time`` (``value`` as
Python writes a float, exactly; empty where the job logged NaN or an infinity; ``wall_time`` in Unix seconds). JSON:
``{"run", "job", "status", "metrics": {key: {"unit", "steps", "values", "wall_times"}}}`` with ``null``
for NaN. Keys logged under an older name come out under their current one (``metrics.RENAMED_KEYS``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import secrets
from pathlib import Path

from rlhf_core.metrics import current_key, unit
from rlhf_core.store import Project

FORMATS = ("csv", "json")
CSV_COLUMNS = ("run", "step", "key", "unit", "value", "wall_time")


class MetricsExportError(ValueError):
    """A run's metrics cannot be exported as asked; ``str(error)`` says why."""


def metric_rows(project: Project, run_id: int) -> list[tuple[int, str, float | None, float]]:
    """(step, key, value, wall time) of every value run ``run_id`` logged, in the order logged (None: NaN)."""
    rows = project.conn.execute("SELECT step, key, value, wall_time FROM metrics WHERE run_id = ? ORDER BY id",
                                [int(run_id)])
    return [(int(step), current_key(key), None if value is None or not math.isfinite(value) else float(value),
             float(wall)) for step, key, value, wall in rows]


def check_run(project: Project, run_id: int) -> dict:
    """The run, or :class:`MetricsExportError` naming the project when it has no such run."""
    run = project.get_run(int(run_id))
    if run is None:
        raise MetricsExportError(f"The project {project.folder} has no run {run_id} (`info {project.folder}` "
                                 "lists its runs).")
    return run


def metrics_csv(project: Project, run_id: int) -> str:
    check_run(project, run_id)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for step, key, value, wall in metric_rows(project, run_id):
        writer.writerow([run_id, step, key, unit(key), "" if value is None else repr(value), repr(wall)])
    return out.getvalue()


def metrics_json(project: Project, run_id: int) -> str:
    run = check_run(project, run_id)
    metrics: dict[str, dict] = {}
    for step, key, value, wall in metric_rows(project, run_id):
        entry = metrics.setdefault(key, {"unit": unit(key), "steps": [], "values": [], "wall_times": []})
        entry["steps"].append(step)
        entry["values"].append(value)
        entry["wall_times"].append(wall)
    return json.dumps({"run": int(run_id), "job": run["kind"], "status": run["status"], "metrics": metrics},
                      indent=1, allow_nan=False) + "\n"


def export_metrics(project: Project, run_id: int, fmt: str) -> str:
    """Run ``run_id``'s metrics as text in ``fmt`` (csv or json)."""
    if fmt not in FORMATS:
        raise MetricsExportError(f"{fmt!r} is not an export format; choose csv or json.")
    return metrics_csv(project, run_id) if fmt == "csv" else metrics_json(project, run_id)


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in its folder (never a half-written file).
    A missing folder or a folder in the file's place is :class:`MetricsExportError`."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise MetricsExportError(f"{path} is a folder; give a file name to write.")
    if not path.parent.is_dir():
        raise MetricsExportError(f"The folder {path.parent} does not exist.")
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "x", encoding="utf-8", newline="") as fh:  # the usual permissions (mkstemp's are 0600)
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
