"""Labelling views on real clips: keyboard labels, undo, ranking, a keyboard demonstration."""

from __future__ import annotations

import threading

import pytest
from PySide6.QtCore import Qt

from tests.app.conftest import wait_saved

from rlhf_core.envs.clips import make_clips, queue_random_pairs
from rlhf_core.envs.make import close_env, make_env
from rlhf_core.envs.policies import RandomPolicy
from rlhf_core.envs.rollout import rollout
from rlhf_core.envs.storage import save_trajectory


def fill(project, n_traj=3, pairs=5):
    env = make_env("CartPole-v1")
    ids = [save_trajectory(project, rollout(env, RandomPolicy(env.action_space, seed=s), seed=s, max_steps=30,
                                            source={"kind": "random"})) for s in range(n_traj)]
    close_env(env)
    clips = make_clips(project, ids, length=8, per_trajectory=3)
    queue_random_pairs(project, clips, pairs)
    return ids


@pytest.fixture
def filled(window):
    ids = fill(window.project)
    window.open_project(window.project.folder)  # re-open: pages read the new content
    return window, ids


def test_keyboard_labelling_stores_labels_with_response_time(qtbot, filled):
    window, _ = filled
    view = window.clip_page
    window.show_page("clips")
    first = view.current
    assert first is not None and view.left_panel.frames.shape[0] == 8
    # the next pair is decoded on a worker thread while this one plays
    nxt = window.project.pending_pairs(limit=2)[1]
    qtbot.waitUntil(lambda: all(view.frames.cached(nxt[k]) is not None for k in ("left_id", "right_id")),
                    timeout=10_000)
    assert view.frames.decode_threads and threading.get_ident() not in view.frames.decode_threads
    assert view.playback.playing and view.right_panel.shown_index == view.left_panel.shown_index
    qtbot.wait(120)
    qtbot.keyClick(view, Qt.Key.Key_Left)
    qtbot.keyClick(view, Qt.Key.Key_2)
    qtbot.keyClick(view, Qt.Key.Key_Equal)
    qtbot.keyClick(view, Qt.Key.Key_B)
    wait_saved(qtbot)
    comps = window.project.comparisons()
    assert [c["outcome"] for c in comps] == ["left", "right", "tie", "both_bad"]
    assert comps[0]["left_id"] == first["left_id"] and comps[0]["response_ms"] >= 100
    assert all(c["source"] == "human" and c["labeller_id"] is not None for c in comps)
    assert view.progress_label.text() == "Labelled 4 · 1 waiting"
    # Z undoes the last label: the row is kept, soft-deleted, and its pair is on screen again
    last_pair = (comps[-1]["left_id"], comps[-1]["right_id"])
    qtbot.keyClick(view, Qt.Key.Key_Z)
    assert (view.current["left_id"], view.current["right_id"]) == last_pair  # on screen at once
    wait_saved(qtbot)
    assert [c["outcome"] for c in window.project.comparisons()] == ["left", "right", "tie"]
    assert len(window.project.comparisons(include_deleted=True)) == 4
    assert (view.current["left_id"], view.current["right_id"]) == last_pair
    qtbot.keyClick(view, Qt.Key.Key_S)
    qtbot.keyClick(view, Qt.Key.Key_Right)
    assert view.current is None and view.empty_label.isVisible()
    wait_saved(qtbot)
    assert window.project.counts()["queued_pairs"] == 0


def test_labels_survive_a_restart_and_can_be_changed(qtbot, filled, settings):
    from app.main_window import MainWindow

    window, _ = filled
    view = window.clip_page
    for key in (Qt.Key.Key_1, Qt.Key.Key_1):
        qtbot.keyClick(view, key)
    wait_saved(qtbot)
    cid = window.project.comparisons()[0]["id"]
    change = view.change_label(cid, "right")
    wait_saved(qtbot)
    new_id = change.result
    folder = window.project.folder
    window.close()
    again = MainWindow(settings, interactive=False)
    qtbot.addWidget(again)
    assert again.open_project(folder)
    comps = again.project.comparisons()
    assert sorted(c["outcome"] for c in comps) == ["left", "right"]
    assert next(c for c in comps if c["id"] == new_id)["supersedes_id"] == cid
    assert again.clip_page.recent.count() == 2
    again.close()


def test_blind_labelling_hides_true_returns_until_revealed(qtbot, filled):
    window, _ = filled
    view = window.clip_page
    assert "return" not in view.left_title.text().lower()
    qtbot.keyClick(view, Qt.Key.Key_1)
    wait_saved(qtbot)
    assert "true returns" not in view.recent.item(0).text()
    view.reveal_box.setChecked(True)
    assert "true returns" in view.recent.item(0).text()


def test_ranking_by_order_and_ties(qtbot, filled):
    window, ids = filled
    view = window.ranking_page
    window.show_page("rank")
    window.activateWindow()
    assert view.env_box.currentText() == "CartPole-v1"
    view.load_items(ids)
    # thumbnails and the selected trajectory's video are decoded on a worker thread, not the GUI's
    assert view.list.count() == 3 and view.list.item(0).icon().isNull()
    assert view.recent_title.text() == "Saved rankings: 0 · 3 on screen"
    assert view.preview_title.text().endswith("decoding the video…")
    qtbot.waitUntil(lambda: all(not view.list.item(i).icon().isNull() for i in range(3)), timeout=10_000)
    steps = window.project.get_item(ids[0])["length"]
    qtbot.waitUntil(lambda: view.preview.frames is not None and len(view.preview.frames) == steps + 1,
                    timeout=10_000)
    assert view.preview_title.text() == f"Trajectory {ids[0]} · CartPole-v1 · {steps} steps" and view.playback.playing
    assert view.frames.decode_threads and threading.get_ident() not in view.frames.decode_threads
    view.list.setCurrentRow(0)  # cached now: shown at once
    # a broken video: the preview says so (not "decoding…" for ever) and the status line has the reason
    broken = window.project.get_item(ids[1])
    view.frames.wait()
    view.frames.clear()  # nothing cached: the broken file is what gets decoded
    window.project.abspath(broken["media_path"]).write_bytes(b"not a video")
    view.list.setCurrentRow(1)
    qtbot.waitUntil(lambda: view.preview.text() == "could not decode the video", timeout=10_000)
    assert view.status.text().startswith(f"Could not decode the video of trajectory {ids[1]}: ")
    assert view.preview_title.text() == f"Trajectory {ids[1]} · the video could not be decoded"
    view.list.setCurrentRow(0)
    # drag the last item to the top (what InternalMove does), then tie the last two
    moved = view.list.takeItem(2)
    view.list.insertItem(0, moved)
    view.list.item(2).setCheckState(Qt.CheckState.Checked)
    assert view.groups() == [[ids[2]], [ids[0], ids[1]]]
    qtbot.keyClick(view.list, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    wait_saved(qtbot)
    rankings = window.project.conn.execute("SELECT id FROM rankings").fetchall()
    assert len(rankings) == 1
    assert window.project.ranking_groups(rankings[0][0]) == [[ids[2]], sorted([ids[0], ids[1]])]
    pairs = {(c["left_id"], c["right_id"], c["outcome"]) for c in window.project.comparisons()
             if c["ranking_id"] == rankings[0][0]}
    assert pairs == {(ids[2], ids[0], "right"), (ids[2], ids[1], "right"), (ids[0], ids[1], "tie")}
    assert view.recent.count() == 1 and view.recent.item(0).text().startswith(f"#{rankings[0][0]} · you")
    view._on_undo_clicked()
    wait_saved(qtbot)
    assert view.recent.count() == 0 and window.project.comparisons() == []
    assert window.project.conn.execute("SELECT deleted_at FROM rankings").fetchone()[0] is not None


def test_keyboard_demo_is_recorded_and_saved(qtbot, window):
    view = window.demo_page
    window.show_page("demo")
    view.env_box.setCurrentText("CartPole-v1")
    view.start()
    assert view.demo is not None and view.timer.isActive()
    view.timer.stop()  # drive the clock by hand for a deterministic test
    qtbot.keyPress(view, Qt.Key.Key_Right)
    for _ in range(3):
        view.tick()
    qtbot.keyRelease(view, Qt.Key.Key_Right)
    qtbot.keyPress(view, Qt.Key.Key_Left)
    view.tick()
    qtbot.keyRelease(view, Qt.Key.Key_Left)
    item_id = view.stop_and_save()
    traj = window.project.get_item(item_id)
    assert traj["source"] == "human" and traj["length"] == 4 and traj["env_id"] == "CartPole-v1"
    from rlhf_core.envs.storage import load_arrays

    assert load_arrays(window.project, traj)["actions"].ravel().tolist() == [1, 1, 1, 0]


def test_extrapolation_demo_runs_from_the_app_and_fills_the_view(qtbot, window):
    from rlhf_core.experiments.extrapolation import ExtrapolationDemoConfig
    from tests.app.conftest import wait_finished

    cfg = ExtrapolationDemoConfig(env_id="CartPole-v1", learner_steps=1024, checkpoint_every=512,
                                  episodes_per_checkpoint=2, max_demo_return=1000.0, snippet_pairs=100, members=1,
                                  reward_steps=30, snippet_min=5, snippet_max=10, ppo_steps=1024, eval_episodes=1,
                                  video_of_policy=False)
    run_id = window.start_run("extrapolation_demo", cfg)
    status, error = wait_finished(qtbot, window, run_id, timeout=120_000)
    assert status == "completed", error
    # live metrics of every stage reached the plot store
    keys = set(window.runs_page.plot.store.keys([run_id]))
    assert {"demos/true_return", "reward_model/m0_loss", "rollout/true_return"} <= keys
    window.show_page("extrapolation")
    view = window.extrapolation_page
    assert view.table.rowCount() == 1 and view.table.item(0, 0).text() == str(run_id)
    result = window.project.get_run(run_id)["result"]
    assert view.table.item(0, 3).text() == f"{result['best_demo_return']:.1f}"
    curves = view.scatter_plot.listDataItems()
    assert len(curves) == 2 and len(curves[0].xData) == result["n_demos"]
    assert "Pearson r on unseen trajectories" in view.stats.text()


def test_learned_reward_strip_under_each_clip(qtbot, filled):
    import numpy as np

    from rlhf_core.envs.storage import load_arrays
    from rlhf_core.jobs import RecordingContext, execute_job, get_job
    from rlhf_core.trainers.control.reward_model import RewardModelConfig

    window, ids = filled
    view = window.clip_page
    window.show_page("clips")
    assert not view.left_strip.isVisible()  # no reward model yet
    project = window.project
    rets = {i: project.get_item(i)["true_return"] for i in ids}
    project.add_ranking([[i] for i in sorted(ids, key=rets.get)])
    out = execute_job(get_job("reward_model"), RewardModelConfig(env_id="CartPole-v1", source="rankings", members=1,
                                                                 steps=20, snippet_pairs=50, snippet_min=3,
                                                                 snippet_max=8, hidden=8), RecordingContext(),
                      project_path=project.folder)
    assert out.status == "completed", out.error
    view.show_next()
    assert view.left_strip.isVisible() and view.right_strip.isVisible()
    clip = project.get_item(view.current["left_id"])
    assert len(view.left_strip.values) == clip["end_step"] - clip["start_step"] == len(load_arrays(project, clip)["rewards"])
    assert np.isfinite(view.left_strip.values).all()
    view.playback.seek(3)
    assert view.left_strip.cursor.value() == 3
    view.strip_box.setChecked(False)
    assert not view.left_strip.isVisible()


def test_why_this_pair_and_pairs_queued_while_the_view_waits(qtbot, window):
    import json

    window.show_page("clips")
    view = window.clip_page
    assert view.current is None
    fill(window.project, n_traj=2, pairs=0)
    clips = [c["id"] for c in window.project.items("clip")]
    window.project.enqueue_pair(clips[0], clips[3], reason={"selection": "disagreement",
                                                            "member_p_left": [0.2, 0.7, 0.55], "disagreement": 0.042})
    qtbot.waitUntil(lambda: view.current is not None, timeout=5000)  # picked up without any click
    assert "disagree" in view.why_label.text() and "0.20, 0.70, 0.55" in view.why_label.text()
    assert json.loads(view.current["reason_json"])["selection"] == "disagreement"
