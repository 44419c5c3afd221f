"""The Runs page's Compare tab follows the ticked runs: one column per run, differing settings highlighted,
"Only differences" hiding the shared ones; and a finished run's plot holds each point once."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from app.pages.compare_view import DIFFERS


def _tick(page, run_id: int) -> None:
    for row in range(page.table.rowCount()):
        item = page.table.item(row, 0)
        if item.data(Qt.ItemDataRole.UserRole) == run_id:
            item.setCheckState(Qt.CheckState.Checked)


def _rows(view) -> dict[str, list[str]]:
    table = view.table
    return {table.verticalHeaderItem(r).text(): [table.item(r, c).text() for c in range(table.columnCount())]
            for r in range(table.rowCount())}


def test_ticked_runs_are_compared_with_their_differences_highlighted(qtbot, window):
    project = window.project
    runs = []
    for beta, loss in ((0.1, 0.5), (0.3, 0.25)):
        run = project.create_run("dpo", {"beta": beta, "steps": 20, "<b>model</b>": "x"})
        project.start_run(run)
        project.log_metrics(run, 0, {"train/loss": 1.0})
        project.log_metrics(run, 10, {"train/loss": loss})
        project.finish_run(run, "completed", result={"heldout_accuracy": 1 - loss})
        runs.append(run)
    page = window.runs_page
    page.refresh()
    view = page.compare
    for run in runs:
        _tick(page, run)
    qtbot.waitUntil(lambda: view.table.columnCount() == 2, timeout=5000)
    tab = page.info_tabs.indexOf(view)
    assert page.info_tabs.tabText(tab) == "Compare (2)"
    rows = _rows(view)
    assert rows["beta"] == ["0.1", "0.3"] and "steps" not in rows  # shared settings hidden by default
    assert rows["train/loss"] == ["0.5", "0.25"] and rows["heldout_accuracy"] == ["0.5", "0.75"]
    beta_row = list(rows).index("beta")
    assert view.table.item(beta_row, 0).background().color() == DIFFERS
    assert view.hint.text() == "2 runs; 1 of 3 settings differ (highlighted)."
    view.only_differences.setChecked(False)
    rows = _rows(view)
    assert rows["steps"] == ["20", "20"] and rows["<b>model</b>"] == ["x", "x"]  # names shown as written
    assert view.table.item(list(rows).index("steps"), 0).background().color() != DIFFERS


def test_a_run_finished_in_the_database_before_its_last_live_metrics_arrive_is_plotted_once(qtbot, window):
    project, page = window.project, window.runs_page
    run = project.create_run("dpo", {})
    project.start_run(run)
    for step in range(3):
        project.log_metrics(run, step, {"train/loss": 1.0 - step / 10})
    window.show_page("runs")
    page.refresh()
    page.select_run(run)
    page.on_metrics(run, [(0, {"train/loss": 1.0}), (1, {"train/loss": 0.9})])  # live, from the runner
    project.finish_run(run, "completed", result={})
    page.refresh()  # e.g. another page's refresh while the last batch is still queued for this thread
    page.on_metrics(run, [(2, {"train/loss": 0.8})])
    page.on_job_finished(run, "completed", "")
    page.plot.redraw()
    steps, values = page.plot.plotted_data(run, "train/loss")
    assert list(steps) == [0, 1, 2] and list(values) == pytest.approx([1.0, 0.9, 0.8])


def test_a_run_finished_in_the_database_before_any_live_metric_arrives_is_plotted_once(qtbot, window):
    project, page = window.project, window.runs_page
    window.show_page("runs")
    run = project.create_run("dpo", {})
    page.on_job_queued(run)  # the runner took it
    project.start_run(run)
    for step in range(3):
        project.log_metrics(run, step, {"train/loss": 1.0 - step / 10})
    project.finish_run(run, "completed", result={})  # a fast job: done before the GUI heard of it
    page.on_status_changed(run, "running")  # the queued "running" notice arrives late
    page.on_metrics(run, [(0, {"train/loss": 1.0}), (1, {"train/loss": 0.9}), (2, {"train/loss": 0.8})])
    page.on_job_finished(run, "completed", "")
    page.plot.redraw()
    steps, values = page.plot.plotted_data(run, "train/loss")
    assert list(steps) == [0, 1, 2] and list(values) == pytest.approx([1.0, 0.9, 0.8])
