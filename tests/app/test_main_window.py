"""The main window with real jobs: live metrics reach the plot, Cancel works, failures stay contained."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from rlhf_core.store import Project
from rlhf_core.trainers.control.synthetic_preferences import SyntheticPreferenceConfig
from tests.app.conftest import wait_finished
from tests.app.jobs_for_tests import SLEEPY, SleepyConfig
from tests.conftest import ROOT

SMALL = SyntheticPreferenceConfig(n_items=60, n_pairs=300, steps=60, eval_every=20)


def test_job_metrics_reach_the_plot_and_the_database(qtbot, window):
    seen_live = []
    window.runner.metrics_logged.connect(lambda rid, batch: seen_live.extend(batch))
    run_id = window.start_run("synthetic_preferences", SMALL)
    status, error = wait_finished(qtbot, window, run_id)
    assert status == "completed", error
    assert len(seen_live) == 60  # every step arrived in the GUI thread
    plot = window.runs_page.plot
    # the redraw timer backs off to 1 s a frame on a busy machine (CI's 2 cores)
    qtbot.waitUntil(lambda: len(plot.plotted_data(run_id, "reward_model/loss")[0]) == 60, timeout=20_000)
    steps, values = plot.plotted_data(run_id, "reward_model/loss")
    db_steps, db_values = window.project.metrics(run_id)["reward_model/loss"]
    assert list(steps) == db_steps == list(range(60))
    np.testing.assert_allclose(values, db_values)
    assert set(plot.plot_groups()) == {"reward_model", "time"}
    assert window.runs_page.run_by_id(run_id)["status"] == "completed"
    assert window.project_page.count_labels["runs"].text() == "1"


def test_plots_reload_from_database_after_restart(qtbot, window, settings, tmp_path):
    from app.main_window import MainWindow

    run_id = window.start_run("synthetic_preferences", SMALL)
    assert wait_finished(qtbot, window, run_id)[0] == "completed"
    folder = window.project.folder
    window.close()
    again = MainWindow(settings, interactive=False)
    qtbot.addWidget(again)
    assert again.open_project(folder)
    again.runs_page.plot.redraw()
    steps, _ = again.runs_page.plot.plotted_data(run_id, "reward_model/heldout_accuracy")
    assert list(steps) == [0, 19, 39, 59]
    again.close()


def test_cancel_stops_a_running_job_within_two_seconds(qtbot, window):
    run_id = window.start_run("synthetic_preferences", SyntheticPreferenceConfig(steps=10_000_000))
    qtbot.waitUntil(lambda: window.runs_page.plot.store.data(run_id, "reward_model/loss")[0].size > 0, timeout=30_000)
    assert window.cancel_button.isVisible()
    t0 = time.monotonic()
    window.cancel_button.click()
    status, _ = wait_finished(qtbot, window, run_id, timeout=5000)
    assert status == "cancelled" and time.monotonic() - t0 < 2.0
    assert window.project.get_run(run_id)["status"] == "cancelled"
    assert not window.runner.busy and not window.cancel_button.isVisible()


def test_failing_job_shows_error_and_app_keeps_working(qtbot, window):
    bad = window.runner.submit(window.project, SLEEPY, SleepyConfig(steps=10, fail_at=3))
    status, error = wait_finished(qtbot, window, bad)
    assert status == "failed" and error == "deliberate failure at step 3"  # in words: the traceback is stored
    assert window.error_panel.isVisible()
    assert "deliberate failure at step 3" in window.error_panel.text.toPlainText()
    assert "Traceback" not in window.error_panel.text.toPlainText()
    run = window.project.get_run(bad)
    assert run["status"] == "failed" and "ValueError" in run["error"]
    window.runs_page.select_run(bad)
    assert "deliberate failure" in window.runs_page.error_text.toPlainText()
    # the app still runs jobs
    good = window.start_run("synthetic_preferences", SMALL)
    assert wait_finished(qtbot, window, good)[0] == "completed"


def test_runs_table_shows_running_while_the_job_runs(qtbot, window):
    run_id = window.runner.submit(window.project, SLEEPY, SleepyConfig(steps=100))
    # the job's thread stores "running"; the table follows without waiting for the next refresh
    qtbot.waitUntil(lambda: window.runs_page.run_by_id(run_id)["status"] == "running", timeout=5000)
    row = next(r for r in range(window.runs_page.table.rowCount())
               if window.runs_page.table.item(r, 0).text() == str(run_id))
    assert window.runs_page.table.item(row, 2).text() == "running" and window.runner.busy
    window.runner.cancel(run_id)
    assert wait_finished(qtbot, window, run_id)[0] == "cancelled"


def test_one_heavy_job_at_a_time_others_queue(qtbot, window):
    first = window.runner.submit(window.project, SLEEPY, SleepyConfig(steps=15))
    second = window.runner.submit(window.project, SLEEPY, SleepyConfig(steps=5))
    assert window.runner.current_run_id == first and window.runner.queued_run_ids == [second]
    assert window.project.get_run(second)["status"] == "queued"
    assert window.queue_label.text() == "1 queued"
    assert wait_finished(qtbot, window, first)[0] == "completed"
    assert wait_finished(qtbot, window, second)[0] == "completed"
    a, b = window.project.get_run(first), window.project.get_run(second)
    assert a["finished_at"] <= b["started_at"]  # never overlapped


def test_cancelling_a_queued_run(qtbot, window):
    first = window.runner.submit(window.project, SLEEPY, SleepyConfig(steps=20))
    second = window.runner.submit(window.project, SLEEPY, SleepyConfig(steps=20))
    assert window.runner.cancel(second)
    assert window.project.get_run(second)["status"] == "cancelled"
    window.runner.cancel(first)
    assert wait_finished(qtbot, window, first)[0] == "cancelled"


def test_impossible_config_is_refused_without_a_run(qtbot, window):
    assert window.start_run("synthetic_preferences", SyntheticPreferenceConfig(steps=0)) is None
    assert "steps: must be at least 1" in window.error_panel.text.toPlainText()
    assert window.project.runs() == []


def test_closing_the_window_cancels_and_waits(qtbot, window):
    """Closing cancels the job and closes once it stopped, without waiting in the GUI thread
    (tests/app/test_errors_quit_views.py measures that)."""
    run_id = window.runner.submit(window.project, SLEEPY, SleepyConfig(steps=100_000))
    qtbot.waitUntil(lambda: window.runner.busy, timeout=5000)
    folder = window.project.folder
    t0 = time.monotonic()
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=3000)
    assert time.monotonic() - t0 < 3.0 and window.project is None
    with Project.open(folder) as p:
        assert p.get_run(run_id)["status"] == "cancelled"


def test_pages_come_from_the_one_table(qtbot, window):
    """Navigation, `show_page`, the attributes and `--page` all follow app.pages.PAGES."""
    from app.__main__ import parse_args
    from app.pages import PAGES

    assert [window.nav.item(row).text() for row in range(window.nav.count())] == [p.title for p in PAGES]
    for row, page in enumerate(PAGES):
        assert window.pages[page.name] is getattr(window, page.attr) is window.stack.widget(row)
        window.show_page(page.name)
        assert window.nav.currentRow() == row and window.stack.currentIndex() == row
        assert parse_args(["--page", page.name]).page == page.name
    with pytest.raises(SystemExit):
        parse_args(["--page", "nowhere"])


def test_opening_a_bad_project_keeps_the_current_one(qtbot, window, tmp_path):
    current = window.project.folder
    junk = tmp_path / "junk.rlhf"
    junk.mkdir()
    (junk / "project.db").write_bytes(b"garbage" * 100)
    assert not window.open_project(junk)
    assert window.project is not None and window.project.folder == current
    assert "not an SQLite database" in window.error_panel.text.toPlainText()
    assert (junk / "project.db").read_bytes() == b"garbage" * 100


def test_settings_persist(qtbot, window, settings):
    from app.main_window import MainWindow
    from app.settings import Settings

    settings.torch_threads = 2
    window.resize(1250, 700)  # above the minimum size (app.main_window.MIN_SIZE)
    size = (window.width(), window.height())
    assert size[1] == 700  # differs from the default 800
    folder = str(window.project.folder)
    window.close()
    reread = Settings(settings.path)
    assert reread.last_project == folder and reread.recent_projects()[0] == folder
    assert reread.torch_threads == min(2, __import__("os").cpu_count() or 1)
    again = MainWindow(reread, interactive=False)
    qtbot.addWidget(again)
    assert again.height() == size[1] == 700  # restored (default height is 800)
    again.close()


def test_interrupted_runs_are_marked_failed_on_open(qtbot, window, tmp_path):
    folder = tmp_path / "crashed.rlhf"
    with Project.create(folder) as p:
        rid = p.create_run("synthetic_preferences", {})
        p.start_run(rid)  # the app "crashed" here
    assert window.open_project(folder)
    assert window.project.get_run(rid)["status"] == "failed"


def test_config_form_builds_from_dataclass_and_validates(qtbot):
    from rlhf_core.config import ConfigError
    from app.training.config_form import ConfigForm

    form = ConfigForm(SyntheticPreferenceConfig)
    qtbot.addWidget(form)
    assert form.editors["teacher"].toolTip().startswith("Simulated labeller")
    assert form.config() == SyntheticPreferenceConfig()
    form.set_value("steps", 5)
    form.set_value("teacher", "oracle")
    assert form.config().steps == 5 and form.config().teacher == "oracle"
    form.set_value("heldout_fraction", 0.9)
    form.set_value("n_pairs", 2)
    with pytest.raises(ConfigError, match="no training pairs"):
        form.config()


@pytest.mark.timeout(300)
def test_smoke_test_command(tmp_path, tiny_model):
    import json

    model = tiny_model  # the frozen app's smoke test uses the bundled model instead
    out = subprocess.run([sys.executable, "-m", "app", "--smoke-test", "--smoke-model", str(model)], cwd=ROOT,
                         capture_output=True, text=True, timeout=240,
                         env={**__import__("os").environ, "RLHF_WORKBENCH_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["smoke_test"] == "ok"
    jobs = report["jobs"]
    # a fresh per-user folder: the demo project was created and its own runs completed too
    assert {k for k in jobs if k.startswith("demo:")} == {"demo:synthetic_preferences", "demo:rollouts"}
    assert jobs["rollouts"]["trajectories"] == 5
    assert jobs["reward_model"]["metric_rows_in_db"] == jobs["reward_model"]["points_in_plot"] == 2
    assert jobs["reward_model"]["checkpoints"] == 1
    assert jobs["generate"]["responses"] == 1 and 1 <= jobs["generate"]["new_tokens"] <= 8
    assert all(j["status"] == "completed" for j in jobs.values())
    assert set(report["envs"]) == {"CartPole-v1", "LunarLander-v3", "HalfCheetah-v5", "ALE/Enduro-v5"}
    assert all(e["ok"] for e in report["envs"].values())
    assert (tmp_path / "projects" / "demo.rlhf" / "project.db").exists()


_CLI_JOB = """
import sys
from rlhf_core.jobs import JobContext, execute_job
from tests.app.jobs_for_tests import SleepyConfig, sleepy
out = execute_job(sleepy, SleepyConfig(steps=int(sys.argv[2])), JobContext(), project_path=sys.argv[1], kind="sft")
print(out.status, out.run_id, flush=True)
"""


def _start_cli_job(folder, steps: int) -> tuple[subprocess.Popen, int]:
    """A job training in `folder` from another process, as `python -m rlhf_core ...` does; returns once its run
    has logged its first metrics."""
    proc = subprocess.Popen([sys.executable, "-c", _CLI_JOB, str(folder), str(steps)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    with Project.open(folder, check=False) as p:
        while time.monotonic() < deadline:
            runs = p.runs()
            if runs and runs[-1]["status"] == "running" and p.metrics(runs[-1]["id"]):
                return proc, runs[-1]["id"]
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("the CLI job did not start")


def test_a_run_another_process_trains_is_followed_live_and_a_killed_one_is_failed(qtbot, window, tmp_path):
    """Opening a project while a terminal trains in it: the run is not marked failed, its plots fill from
    the project and then grow as it logs (every step once), and it ends as completed; a killed one ends failed."""
    import signal

    folder = tmp_path / "shared.rlhf"
    Project.create(folder).close()
    proc, run_id = _start_cli_job(folder, steps=200)  # 20 ms a step: about 4 s
    try:
        window.watcher.timer.setInterval(100)
        assert window.open_project(folder)
        assert window.runs_page.run_by_id(run_id)["status"] == "running"  # not "failed: interrupted"
        assert run_id in window.watcher.followed and window.runs_page.checked_runs() == [run_id]
        assert window.runs_page.selected_run_id() == run_id and not window.runs_page.cancel_button.isEnabled()
        assert window.text_rl_page.current_run == run_id  # an sft run: the Text RL page follows it too
        store = window.runs_page.plot.store
        first = len(store.data(run_id, "test/step")[0])
        assert 0 < first < 200
        qtbot.waitUntil(lambda: window.runs_page.run_by_id(run_id)["status"] == "completed", timeout=60_000)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
    assert run_id not in window.watcher.followed
    steps, values = store.data(run_id, "test/step")
    assert list(steps) == list(range(200)) and list(values) == [float(s) for s in range(200)]  # none twice, none lost
    assert window.text_rl_page.plot.store.data(run_id, "test/step")[0].tolist() == list(range(200))

    proc, killed = _start_cli_job(folder, steps=100_000)
    try:
        qtbot.waitUntil(lambda: killed in window.watcher.followed, timeout=10_000)
        assert window.runs_page.run_by_id(killed)["status"] == "running"
        window.cancel_run(killed)  # the app cannot stop another process's job: it says where to stop it
        assert "running in another process" in window.statusBar().currentMessage()
        assert window.project.get_run(killed)["status"] == "running"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    qtbot.waitUntil(lambda: window.runs_page.run_by_id(killed)["status"] == "failed", timeout=10_000)
    assert "Interrupted" in window.project.get_run(killed)["error"]
    assert killed not in window.watcher.followed


def test_following_other_processes_survives_a_database_error(qtbot, window, tmp_path, caplog):
    """A poll that cannot read the project logs a warning and tries again next time: no exception escapes
    into the event loop (one every 2 s would be a storm of error dialogs)."""
    from app.jobs import ExternalRunWatcher

    watcher = ExternalRunWatcher(window.runner)
    broken = Project.create(tmp_path / "gone.rlhf")
    watcher.set_project(broken)
    broken.close()  # every query now raises sqlite3.ProgrammingError
    watcher.poll()
    assert any("following other processes' runs" in r.getMessage() for r in caplog.records)
    watcher.set_project(None)
    assert not watcher.timer.isActive()
