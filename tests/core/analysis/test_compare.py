"""Runs side by side: settings that differ are marked (a missing one counts), results' numbers and each
metric's value at its LAST step (not its largest or latest-written), bad input in words."""

from __future__ import annotations

import pytest

from rlhf_core.analysis.compare import CompareError, compare_runs, format_value


def _run(project, config: dict, metrics: list[tuple[int, dict]], result: dict, status: str = "completed") -> int:
    run = project.create_run("dpo", config)
    project.start_run(run)
    for step, values in metrics:
        project.log_metrics(run, step, values)
    project.finish_run(run, status, result=result)
    return run


def test_two_runs_side_by_side(project):
    a = _run(project, {"beta": 0.1, "steps": 20, "seed": 0},
             [(0, {"train/loss": 0.7}), (10, {"train/loss": 0.5}), (5, {"train/loss": 0.9, "reward/mean": 1.0})],
             {"heldout_accuracy": 0.75, "policy": "checkpoint:3", "ok": True})
    b = _run(project, {"beta": 0.5, "steps": 20, "seed": 0, "lora": True},
             [(0, {"train/loss": 0.6}), (20, {"train/loss": 0.4})], {"heldout_accuracy": 0.5}, status="failed")
    c = compare_runs(project, [b, a])
    assert c.run_ids == [b, a] and c.headers == [f"run {b} · dpo", f"run {a} · dpo"]
    settings = {row.name: (row.values, row.differs) for row in c.section("settings")}
    assert settings == {"beta": ([0.5, 0.1], True), "steps": ([20, 20], False), "seed": ([0, 0], False),
                        "lora": ([True, None], True)}
    run_rows = {row.name: row.values for row in c.section("run")}
    assert run_rows["status"] == ["failed", "completed"]
    assert {row.name: row.values for row in c.section("result")} == {"heldout_accuracy": [0.5, 0.75]}
    finals = {row.name: row.values for row in c.section("final metrics")}
    assert finals == {"train/loss": [pytest.approx(0.4), pytest.approx(0.5)], "reward/mean": [None, 1.0]}
    assert c.to_dict()["rows"][0] == {"section": "run", "name": "job", "values": ["dpo", "dpo"], "differs": False}


def test_last_metrics_is_the_value_at_the_last_step(project):
    run = _run(project, {}, [(3, {"x/y": 3.0}), (1, {"x/y": 1.0}), (2, {"x/y": 2.0})], {})
    assert project.last_metrics(run) == {"x/y": (3, 3.0)}


def test_compare_refuses_one_run_or_an_unknown_one(project):
    a = _run(project, {}, [], {})
    with pytest.raises(CompareError, match="at least two runs"):
        compare_runs(project, [a, a])
    with pytest.raises(CompareError, match="no run 999"):
        compare_runs(project, [a, 999])


def test_cells_read_as_numbers_and_words():
    assert [format_value(v) for v in (None, True, 0.123456, 12345, 7, [1, 2], "x")] == [
        "–", "yes", "0.1235", "12,345", "7", "[1,2]", "x"]


def test_cli_compare_prints_the_table_or_says_why_not(project, capsys):
    import json

    from rlhf_core.cli import main

    a = _run(project, {"beta": 0.1}, [(1, {"train/loss": 0.5})], {})
    b = _run(project, {"beta": 0.2}, [(1, {"train/loss": 0.4})], {})
    assert main(["compare", "--project", str(project.folder), "--runs", str(a), str(b)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["run_ids"] == [a, b]
    assert {"section": "settings", "name": "beta", "values": [0.1, 0.2], "differs": True} in out["rows"]
    assert main(["compare", "--project", str(project.folder), "--runs", str(a)]) == 2
    assert "at least two runs" in capsys.readouterr().err
