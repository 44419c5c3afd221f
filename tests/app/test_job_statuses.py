"""Statuses that are true: every view says "running" while a job runs, with its elapsed time, speed and
time left; a held-out accuracy is shown with its n, 95 % interval and a warning when too few pairs."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from tests.app.conftest import wait_finished
from tests.app.jobs_for_tests import SLEEPY, SleepyConfig


def submit_as(window, kind: str, steps: int = 6000) -> int:
    """The sleepy test job (20 ms a step) stored under another job's name, so that the page listing that
    job's runs shows it."""
    return window.runner.submit(window.project, dataclasses.replace(SLEEPY, name=kind), SleepyConfig(steps=steps))


def stop(qtbot, window, run_id: int) -> None:
    window.runner.cancel(run_id)
    assert wait_finished(qtbot, window, run_id)[0] == "cancelled"


def runs_row(window, run_id: int) -> int:
    table = window.runs_page.table
    return next(r for r in range(table.rowCount()) if table.item(r, 0).text() == str(run_id))


def test_every_view_says_running_while_a_run_runs(qtbot, window):
    run_id = submit_as(window, "grpo")
    qtbot.waitUntil(lambda: window.project.get_run(run_id)["status"] == "running", timeout=5000)
    qtbot.waitUntil(lambda: window.runs_page.run_by_id(run_id)["status"] == "running", timeout=5000)
    page = window.text_rl_page
    assert page.run_list.item(0).text().startswith(f"Run {run_id} · grpo · running")
    assert window.runs_page.table.item(runs_row(window, run_id), 2).text() == "running"
    window.runs_page.select_run(run_id)
    details = window.runs_page.details.toPlainText()
    assert json.loads(details)["status"] == "running" and json.loads(details)["started_at"]
    stop(qtbot, window, run_id)
    assert page.run_list.item(0).text() == f"Run {run_id} · grpo · cancelled"
    assert json.loads(window.runs_page.details.toPlainText())["status"] == "cancelled"


def test_a_long_job_shows_elapsed_time_seconds_per_step_and_the_time_left(qtbot, window):
    run_id = submit_as(window, "grpo")
    page = window.text_rl_page
    window.runs_page.select_run(run_id)
    # wherever the job's progress is shown: the status bar, the runs table, the Text RL run list
    qtbot.waitUntil(lambda: "left" in window.job_timing.text() and "/s" in window.job_timing.text(), timeout=5000)
    assert re.fullmatch(r"\d+ s elapsed · [\d.]+ steps/s · about \d+ m \d\d s left", window.job_timing.text())
    timing = window.runner.timing(run_id)
    assert 0.015 < timing.seconds_per_step < 0.2  # 20 ms sleeps, on a busy 2-core machine
    assert timing.total == 6000 and timing.remaining == pytest.approx((6000 - timing.step) * timing.seconds_per_step,
                                                                      abs=1.5)
    cell = window.runs_page.table.item(runs_row(window, run_id), 4)
    qtbot.waitUntil(lambda: "left" in cell.text(), timeout=3000)
    assert re.fullmatch(r"\d+ s · ~\d+ m \d\d s left", cell.text()) and "steps/s" in cell.toolTip()
    line = page.run_list.item(0).text().split("\n")
    assert line[0] == f"Run {run_id} · grpo · running"
    assert re.fullmatch(r"\d+ s · [\d.]+ steps/s · ~\d+ m \d\d s left", line[1])
    assert "elapsed" in page.run_list.item(0).toolTip()
    stop(qtbot, window, run_id)
    assert window.job_timing.text() == "" and page.run_list.item(0).text() == f"Run {run_id} · grpo · cancelled"


def test_the_reward_model_picker_and_the_generate_page_say_running(qtbot, window):
    run_id = submit_as(window, "text_reward_model")
    page = window.text_reward_page
    assert page.run_box.currentText() == f"Run {run_id} — queued"  # before its thread has stored "running"
    qtbot.waitUntil(lambda: page.run_box.currentText() == f"Run {run_id} — running", timeout=5000)
    qtbot.waitUntil(lambda: "left" in page.summary.text(), timeout=5000)
    assert page.summary.text().startswith(f"Run {run_id} running · ") and "elapsed" in page.summary.text()
    stop(qtbot, window, run_id)
    gen = submit_as(window, "generate")
    qtbot.waitUntil(lambda: "elapsed" in window.generate_page.status.text(), timeout=5000)
    assert window.generate_page.status.text().startswith(f"Run {gen}: ")
    stop(qtbot, window, gen)


def finished_run(project, kind: str, result: dict) -> int:
    run_id = project.create_run(kind, {}, status="queued")
    project.start_run(run_id)
    project.finish_run(run_id, "completed", result=result)
    return run_id


def test_an_accuracy_from_few_pairs_shows_n_and_a_95_interval_and_warns(qtbot, window):
    few = finished_run(window.project, "text_reward_model", {"pairs": 12, "heldout_pairs": 3,
                                                            "heldout_accuracy": 2 / 3})
    window.open_project(window.project.folder)  # the pages read the new runs
    page = window.text_reward_page
    expected = "held-out accuracy 0.67 on 3 pairs (95 % CI 0.21–0.94): too few held-out pairs to tell"
    assert page.summary.text() == f"12 pairs (3 held out); {expected}"
    assert page.run_box.currentText() == f"Run {few} — completed, held-out accuracy 0.67 (n = 3, too few to tell)"
    window.runs_page.select_run(few)
    assert window.runs_page.details.toPlainText().startswith("Held-out accuracy 0.67 on 3 pairs (95 % CI "
                                                             "0.21–0.94): too few held-out pairs to tell.\n\n{")
    many = finished_run(window.project, "synthetic_preferences", {"heldout_accuracy": 0.9, "heldout_pairs": 200})
    window.runs_page.refresh()
    window.runs_page.select_run(many)
    first = window.runs_page.details.toPlainText().splitlines()[0]
    assert first == "Held-out accuracy 0.90 on 200 pairs (95 % CI 0.85–0.93)."
