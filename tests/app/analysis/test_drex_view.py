"""D-REX ranking tab of the Extrapolation page: levels, the curve, overrides by key and button, Clear, Watch."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PySide6.QtCore import Qt

from rlhf_core.envs.storage import save_trajectory
from rlhf_core.rewards.drex_overrides import OVERRIDE_NOTE
from tests.app.conftest import wait_saved
from tests.core.rewards.test_drex_overrides import T, noisy_trajectory

# ε -> quality per step; ε=0.75 scores better than ε=0.25, against D-REX's assumption
LEVELS = ((0.0, 1.0), (0.25, 0.5), (0.5, -0.5), (0.75, 0.8))


@pytest.fixture
def drex(window):
    ids = {}
    for eps, quality in LEVELS:
        ids[eps] = [save_trajectory(window.project, noisy_trajectory(eps, k, quality, video=True)) for k in range(2)]
    window.settings.labeller = "ann"
    window.open_project(window.project.folder)  # re-open: pages read the new content
    window.show_page("extrapolation")
    page = window.extrapolation_page
    assert page.tabs.currentWidget() is page.drex_view  # no extrapolation runs: the D-REX tab opens
    return window, page.drex_view, ids


def cells(view, row):
    return [view.table.item(row, c).text() for c in range(view.table.columnCount())]


def test_lists_levels_curve_and_pairs(drex):
    _, view, ids = drex
    assert [view.env_box.itemText(i) for i in range(view.env_box.count())] == ["Pendulum-v1"]
    assert view.table.rowCount() == 3  # gap 0.3: 0 vs .5, 0 vs .75, .25 vs .75
    assert cells(view, 0)[:2] == ["0.00", "0.50"] and cells(view, 0)[4:] == ["ε=0.00 better", "agree", "auto"]
    last = cells(view, 2)
    assert last[:2] == ["0.25", "0.75"] and last[5] == "DISAGREE"  # the true means say otherwise
    assert float(last[2]) == pytest.approx(T * 0.5, abs=1.0) and float(last[3]) == pytest.approx(T * 0.8, abs=1.0)
    # the curve: one point per trajectory, and the mean per level
    means, points = view.plot.getPlotItem().listDataItems()
    assert len(points.getData()[0]) == 8
    x, y = means.getData()
    assert x.tolist() == [0.0, 0.25, 0.5, 0.75]
    project = view.project
    np.testing.assert_allclose(y[1], np.mean([project.get_item(i)["true_return"] for i in ids[0.25]]), rtol=1e-6)
    assert "rises at 1 of 3 steps" in view.summary.text() and "1 of 3 level pairs" in view.summary.text()
    view.gap_box.setValue(0.25)
    assert view.table.rowCount() == 6


def test_override_by_key_and_button_then_clear(qtbot, drex):
    window, view, ids = drex
    project = view.project
    view.table.selectRow(2)  # ε .25 vs .75
    view.table.setFocus()
    qtbot.waitUntil(lambda: view.table.hasFocus())
    qtbot.keyClick(view.table, Qt.Key.Key_R)
    wait_saved(qtbot)
    rows = project.comparisons()
    assert len(rows) == 4
    assert {(c["left_id"], c["right_id"]) for c in rows} == {(a, b) for a in ids[0.25] for b in ids[0.75]}
    assert all(c["outcome"] == "right" and c["source"] == "human" and c["note"] == OVERRIDE_NOTE for c in rows)
    assert {project.labellers()[0]["name"]} == {"ann"} and rows[0]["labeller_id"] == project.labellers()[0]["id"]
    assert cells(view, 2)[6] == "reverse" and view.selected_pairs()[0].worse.epsilon == 0.75  # selection kept
    # two pairs at once with the button: one label per trajectory pair of each
    view.table.clearSelection()
    view.table.selectRow(0)
    view._add_row_to_selection(1)
    view.buttons["equal"].click()
    wait_saved(qtbot)
    assert len(project.comparisons()) == 4 + 4 + 4
    assert [cells(view, r)[6] for r in range(3)] == ["equal", "equal", "reverse"]
    assert sum(c["outcome"] == "tie" for c in project.comparisons()) == 8
    # Clear (Z) undoes the selected pairs' labels; the rows are kept, soft-deleted
    qtbot.keyClick(view.table, Qt.Key.Key_Z)
    wait_saved(qtbot)
    assert len(project.comparisons()) == 4 and len(project.comparisons(include_deleted=True)) == 12
    assert [cells(view, r)[6] for r in range(3)] == ["auto", "auto", "reverse"]
    assert "Cleared: 8 labels undone" in view.status.text()
    # the reward model will see the reversal: a reopened page shows it too
    window.open_project(project.folder)
    assert cells(window.extrapolation_page.drex_view, 2)[6] == "reverse"


def test_watch_plays_one_trajectory_of_each_level(qtbot, drex):
    _, view, ids = drex
    view.table.selectRow(1)  # ε 0 vs .75
    shown = view.watch()
    assert shown == (ids[0.0][0], ids[0.75][0])
    # the videos are decoded on a worker thread: the panels say so, then both play together
    assert view.panel_a.frames is None and view.panel_a.text() == "decoding…" and not view.playback.playing
    qtbot.waitUntil(lambda: view.playback.playing, timeout=10_000)
    assert view.panel_a.frames.shape == (T + 1, 32, 32, 3) and view.panel_b.frames.shape == (T + 1, 32, 32, 3)
    assert view.frames.decode_threads and threading.get_ident() not in view.frames.decode_threads
    qtbot.waitUntil(lambda: view.playback.index > 2, timeout=3000)
    assert view.panel_a.shown_index == view.panel_b.shown_index
    assert view.title_a.text() == f"a: ε=0.00 · trajectory {ids[0.0][0]} (1 of 2)"
    assert view.watch() == (ids[0.0][1], ids[0.75][1])  # again: the next trajectory of each level
    qtbot.waitUntil(lambda: view.playback.playing and view.frames.cached(ids[0.0][1]) is not None, timeout=10_000)
    # the bar in the frame is wider for the second trajectory: the panel really shows it
    assert (view.panel_a.frames[0, 0, :, 1] > 100).sum() > 4 + 2
    view.playback.pause()


def test_watch_says_so_when_a_video_cannot_be_decoded(qtbot, drex):
    window, view, ids = drex
    item = window.project.get_item(ids[0.0][0])
    window.project.abspath(item["media_path"]).write_bytes(b"not a video")
    view.table.selectRow(1)  # ε 0 vs .75: trajectory 1 of each level, the first one broken
    assert view.watch() == (ids[0.0][0], ids[0.75][0])
    qtbot.waitUntil(lambda: view.panel_a.text() == "could not decode the video", timeout=10_000)
    assert view.status.text().startswith(f"Could not decode the video of trajectory {ids[0.0][0]}: ")
    assert not view.playback.playing
