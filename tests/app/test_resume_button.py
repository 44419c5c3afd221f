"""Resume in the app: a cancelled run continues from its saved state as the same run; a run that cannot
resume says why on the button."""

from __future__ import annotations

import pytest

from rlhf_core import registry
from tests.app.conftest import wait_finished
from tests.app.jobs_for_tests import COUNTING, SLEEPY, CountingConfig, SleepyConfig


@pytest.fixture(autouse=True)
def _test_jobs():
    """The test jobs by name (resuming looks a run's job up by its stored name), for these tests only."""
    for spec in (COUNTING, SLEEPY):
        registry.register_job(spec)
    yield
    for spec in (COUNTING, SLEEPY):
        registry._REGISTRY.pop(spec.name, None)


def test_a_cancelled_run_resumes_as_the_same_run_with_every_step_once(qtbot, window):
    run_id = window.runner.submit(window.project, COUNTING, CountingConfig(steps=150))
    qtbot.waitUntil(lambda: len(window.project.metrics(run_id).get("test/step", ([], []))[0]) >= 20, timeout=30_000)
    window.cancel_run(run_id)
    assert wait_finished(qtbot, window, run_id)[0] == "cancelled"
    page = window.runs_page
    window.show_page("runs")
    page.refresh()
    page.select_run(run_id)
    assert page.resume_button.isEnabled(), page.resume_button.toolTip()
    page.resume_button.click()
    status, error = wait_finished(qtbot, window, run_id, timeout=60_000)
    assert status == "completed", error
    run = window.project.get_run(run_id)
    assert run["status"] == "completed" and run["result"]["resumed_from"] >= 19
    steps = window.project.metrics(run_id)["test/step"][0]
    assert steps == list(range(150))  # none twice, none missing
    page.refresh()
    page.select_run(run_id)
    assert not page.resume_button.isEnabled()
    assert "only a cancelled, failed or interrupted run" in page.resume_button.toolTip() or \
        "Select a cancelled" in page.resume_button.toolTip()


def test_a_run_without_a_state_cannot_resume_and_says_why(qtbot, window):
    run_id = window.runner.submit(window.project, SLEEPY, SleepyConfig(steps=5, fail_at=2))
    assert wait_finished(qtbot, window, run_id)[0] == "failed"
    page = window.runs_page
    page.refresh()
    page.select_run(run_id)
    assert not page.resume_button.isEnabled()
    assert "saved no resumable state" in page.resume_button.toolTip()
    assert window.resume_run(run_id) is False
    assert "saved no resumable state" in window.statusBar().currentMessage()
