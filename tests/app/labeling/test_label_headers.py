"""The labelling headers tell the truth: the same waiting pairs everywhere (and counts that follow the
queue), response times from when the pair is visible, label numbers that match "Labelled N"."""

from __future__ import annotations

import time

import pytest
from PySide6.QtCore import Qt

from rlhf_core.labelers.text_labels import queue_response_pairs
from tests.app.conftest import wait_saved
from tests.app.labeling.test_labeling import fill


@pytest.fixture
def filled(qtbot, window):
    fill(window.project, pairs=5)
    pid = window.project.add_prompt("Name a colour.")
    for text in ("red", "blue", "a green one"):
        window.project.add_item("response", prompt_id=pid, text=text, source="generated")
    queue_response_pairs(window.project, seed=0)  # 3 text pairs
    window.open_project(window.project.folder)  # the pages read the new content; the Project page is shown
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)
    return window


def test_counts_of_pairs_waiting_are_the_same_number_everywhere(qtbot, filled):
    window = filled
    assert window.project_page.count_labels["queued_pairs"].text() == "8 (5 clip, 3 text)"
    window.show_page("clips")
    assert window.clip_page.progress_label.text() == "Labelled 0 · 5 waiting"
    window.show_page("text")
    assert window.text_page.pairs.progress_label.text() == "Labelled 0 · 3 waiting"
    # a job queues more clip pairs while a pair is on screen: the clip page's count follows
    window.show_page("clips")
    clips = [c["id"] for c in window.project.items("clip")]
    for a, b in zip(clips[:4], clips[4:8]):
        window.project.enqueue_pair(a, b)
    qtbot.waitUntil(lambda: window.clip_page.progress_label.text() == "Labelled 0 · 9 waiting", timeout=4000)
    window.project_page.refresh(window.project)
    assert window.project_page.count_labels["queued_pairs"].text() == "12 (9 clip, 3 text)"


def test_a_labels_response_time_starts_when_its_pair_is_visible(qtbot, filled):
    window = filled
    view = window.clip_page
    assert view.current is not None and not view.isVisible()  # loaded with the project, on a hidden page
    qtbot.wait(1500)  # the person reads the Project page first
    window.show_page("clips")
    shown = time.monotonic()
    qtbot.wait(200)
    qtbot.keyClick(view, Qt.Key.Key_Left)
    took = time.monotonic() - shown
    wait_saved(qtbot)
    response_ms = window.project.comparisons()[0]["response_ms"]
    assert 100 <= response_ms <= took * 1000 + 50  # not the 1.5 s before the page was open


def test_a_pair_left_on_a_hidden_page_does_not_count_the_time_away(qtbot, filled):
    window = filled
    window.show_page("text")
    view = window.text_page.pairs
    qtbot.wait(150)
    window.show_page("runs")  # away for a second
    qtbot.wait(1000)
    window.show_page("text")
    qtbot.wait(150)
    qtbot.keyClick(view, Qt.Key.Key_Right)
    wait_saved(qtbot)
    assert 250 <= window.project.comparisons()[0]["response_ms"] < 1000  # two 150 ms looks, not the second away


def test_label_numbers_match_the_counter(qtbot, filled):
    window = filled
    view = window.clip_page
    window.show_page("clips")
    for key in (Qt.Key.Key_Left, Qt.Key.Key_Right, Qt.Key.Key_Equal):
        qtbot.keyClick(view, key)
    wait_saved(qtbot)
    qtbot.keyClick(view, Qt.Key.Key_Z)  # undone: its row stays, soft-deleted
    wait_saved(qtbot)
    qtbot.keyClick(view, Qt.Key.Key_B)
    wait_saved(qtbot)
    newest = window.project.comparisons()[-1]["id"]
    assert newest == 4 and view.progress_label.text() == "Labelled 3 · 2 waiting"
    texts = [view.recent.item(i).text() for i in range(view.recent.count())]
    assert [t.split()[0] for t in texts] == ["#3", "#2", "#1"]  # not "#4": the counter says 3
    assert "both bad" in texts[0] and view.recent.item(0).toolTip().startswith(f"Stored as comparison {newest}")


def test_time_in_another_window_does_not_count(qtbot, filled):
    from PySide6.QtWidgets import QWidget

    window = filled
    window.show_page("clips")
    view = window.clip_page
    qtbot.wait(150)
    other = QWidget()  # the person works in another window for a second
    qtbot.addWidget(other)
    other.show()
    other.activateWindow()
    qtbot.waitUntil(lambda: not window.isActiveWindow(), timeout=5000)
    qtbot.wait(1000)
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)
    qtbot.wait(150)
    qtbot.keyClick(view, Qt.Key.Key_Left)
    wait_saved(qtbot)
    assert 250 <= window.project.comparisons()[0]["response_ms"] < 1000


def test_the_clip_page_names_a_running_job_that_waits_for_labels(qtbot, filled):
    window = filled
    window.show_page("clips")
    view, project = window.clip_page, window.project
    qtbot.wait(100)
    assert view.runs_label.isHidden()  # pairs wait, but no running job waits for them
    clips = [c["id"] for c in project.items("clip")]
    collecting = project.create_run("rollouts", {}, status="running")  # queues pairs, learns nothing from them
    project.enqueue_pair(clips[0], clips[6], run_id=collecting)
    run_id = project.create_run("preference_rl", {}, status="running")
    for a, b in zip(clips[:3], clips[3:6]):
        project.enqueue_pair(a, b, run_id=run_id, priority=10.0)
    line = f"Run #{run_id} (preference_rl) is waiting for {{}} of your labels — it keeps training meanwhile"
    qtbot.waitUntil(lambda: view.runs_label.text() == line.format(3), timeout=5000)  # the page's poll
    assert view.runs_label.isVisible() and view.progress_label.text() == "Labelled 0 · 9 waiting"
    qtbot.keyClick(view, Qt.Key.Key_Left)  # the pair that was on screen (not the run's)
    assert view.current["run_id"] == run_id  # the run's pairs come first (priority)
    qtbot.keyClick(view, Qt.Key.Key_Left)
    wait_saved(qtbot)
    assert view.runs_label.text() == line.format(2)
    project.finish_run(run_id, "completed")  # a finished run waits for nothing
    project.finish_run(collecting, "completed")
    qtbot.waitUntil(view.runs_label.isHidden, timeout=5000)
