"""``export-metrics``: a run's metrics as CSV (stdout) or JSON (--out), equal to the project's; an unknown run,
a bad format or a missing folder is one sentence and nothing written."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys

from rlhf_core.metrics import unit
from tests.conftest import ROOT
from tests.core.io.runs_for_reports import STEPS, make_reported_run


def cli(*args):
    return subprocess.run([sys.executable, "-m", "rlhf_core", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def _same(a: float | None, b: float) -> bool:
    return (a is None and math.isnan(b)) or a == b


def test_csv_and_json_equal_the_projects_metrics(project, tmp_path):
    run_id = make_reported_run(project)
    metrics = project.metrics(run_id)
    assert "completions/mean_length" in metrics and "length/mean" not in metrics  # stored under its old name
    project.close()

    out = cli("export-metrics", "--project", project.folder, "--run", run_id, "--format", "csv")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert list(rows[0]) == ["run", "step", "key", "unit", "value", "wall_time"]
    assert len(rows) == sum(len(steps) for steps, _ in metrics.values()) == 7 * STEPS
    for key, (steps, values) in metrics.items():
        mine = [r for r in rows if r["key"] == key]
        assert [int(r["step"]) for r in mine] == steps and {r["unit"] for r in mine} == {unit(key)}
        assert all(_same(float(r["value"]) if r["value"] else None, v) for r, v in zip(mine, values)), key
    assert {r["run"] for r in rows} == {str(run_id)} and all(float(r["wall_time"]) > 1.7e9 for r in rows)

    target = tmp_path / "m.json"
    out = cli("export-metrics", "--project", project.folder, "--run", run_id, "--format", "json", "--out", target)
    assert out.returncode == 0 and out.stdout == "" and str(target) in out.stderr
    data = json.loads(target.read_text())  # strict JSON: NaN is null
    assert data["run"] == run_id and data["job"] == "grpo" and data["status"] == "completed"
    assert set(data["metrics"]) == set(metrics)
    for key, (steps, values) in metrics.items():
        entry = data["metrics"][key]
        assert entry["steps"] == steps and entry["unit"] == unit(key) and len(entry["wall_times"]) == len(steps)
        assert all(_same(a, b) for a, b in zip(entry["values"], values)), key
    assert data["metrics"]["train/loss"]["values"][3] is None


def test_bad_requests_say_why_and_write_nothing(project, tmp_path):
    run_id = make_reported_run(project)
    project.close()
    target = tmp_path / "out.csv"
    cases = [
        (["--run", 99, "--format", "csv", "--out", target], "has no run 99"),
        (["--run", run_id, "--format", "xml", "--out", target], "invalid choice: 'xml'"),
        (["--run", run_id, "--format", "csv", "--out", tmp_path / "missing" / "out.csv"], "does not exist"),
        (["--run", run_id, "--format", "csv", "--out", tmp_path], "is a folder"),
    ]
    for args, words in cases:
        out = cli("export-metrics", "--project", project.folder, *args)
        assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
        assert out.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.rlhf"]
