"""The frame loader decodes videos on a worker thread: same frames as decoding in place, thumbnails,
results of a previous project dropped, a broken video reported (not raised)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from app.labeling.frame_loader import FrameLoader
from rlhf_core.envs.make import close_env, make_env
from rlhf_core.envs.policies import RandomPolicy
from rlhf_core.envs.rollout import rollout
from rlhf_core.envs.storage import load_frames, save_trajectory
from rlhf_core.store import Project


@pytest.fixture
def project(tmp_path):
    p = Project.create(tmp_path / "frames.rlhf")
    env = make_env("CartPole-v1")
    for s in range(2):
        save_trajectory(p, rollout(env, RandomPolicy(env.action_space, seed=s), seed=s, max_steps=20,
                                   source={"kind": "random"}))
    close_env(env)
    yield p
    p.close()


def collect(loader):
    got = []
    loader.loaded.connect(lambda key, frames: got.append((key, frames)))
    return got


def test_decodes_off_the_gui_thread_and_caches(qtbot, project):
    loader = FrameLoader()
    got = collect(loader)
    item = project.items("trajectory")[0]
    assert loader.request(project, item) is None and loader.pending(item["id"])
    assert loader.request(project, item) is None  # asked twice: decoded once
    qtbot.waitUntil(lambda: len(got) == 1, timeout=10_000)
    key, frames = got[0]
    expected = load_frames(project, item)
    assert key == item["id"] and frames.shape == (item["length"] + 1, *expected.shape[1:])
    np.testing.assert_array_equal(frames, expected)
    assert loader.decode_threads and threading.get_ident() not in loader.decode_threads
    assert loader.request(project, item) is frames and not loader.pending(item["id"])  # cached: no signal
    qtbot.wait(50)
    assert len(got) == 1
    # a thumbnail: one frame from the middle, under its own key
    mid = item["length"] // 2
    assert loader.request(project, item, key=("thumb", item["id"]), start=mid, end=mid + 1) is None
    qtbot.waitUntil(lambda: len(got) == 2, timeout=10_000)
    assert got[1][0] == ("thumb", item["id"]) and got[1][1].shape[0] == 1
    np.testing.assert_array_equal(got[1][1][0], expected[mid])


def test_clear_drops_results_of_the_previous_project(qtbot, project):
    loader = FrameLoader(capacity=1)
    got = collect(loader)
    first, second = project.items("trajectory")
    loader.request(project, first)
    loader.clear()  # a new project while the first video decodes
    loader.wait()
    qtbot.wait(50)  # let the queued result arrive (and be dropped)
    assert got == [] and loader.cached(first["id"]) is None
    # the cache keeps at most `capacity` entries, oldest out
    loader.frames_now(project, first)
    loader.frames_now(project, second)
    assert loader.cached(first["id"]) is None and loader.cached(second["id"]) is not None


def test_a_broken_video_is_reported(qtbot, project):
    loader = FrameLoader()
    failed = []
    loader.failed.connect(lambda key, message: failed.append((key, message)))
    item = project.items("trajectory")[0]
    project.abspath(item["media_path"]).write_bytes(b"not a video")
    assert loader.request(project, item) is None
    qtbot.waitUntil(lambda: len(failed) == 1, timeout=10_000)
    assert failed[0][0] == item["id"] and failed[0][1]  # the decoder's message, e.g. InvalidDataError: ...
    assert loader.cached(item["id"]) is None and not loader.pending(item["id"])


def test_a_view_closed_while_decoding_raises_nothing_in_the_worker(qtbot, project, monkeypatch):
    """Qt aborts on an exception escaping a pool thread; PySide reports it through sys.excepthook."""
    import sys

    import shiboken6

    seen = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, tb: seen.append(value))
    loader = FrameLoader()
    pool = loader._pool
    assert loader.request(project, project.items("trajectory")[0]) is None
    shiboken6.delete(loader._relay)  # what closing the view does to its children
    assert pool.waitForDone(10_000)
    assert seen == []


def test_frames_now_waits_for_a_decode_in_flight_instead_of_repeating_it(qtbot, project, monkeypatch):
    import app.labeling.frame_loader as fl
    import rlhf_core.envs.storage as storage

    calls = []
    real = storage.read_video
    counting = lambda *a, **k: calls.append(a) or real(*a, **k)  # noqa: E731
    monkeypatch.setattr(fl, "read_video", counting)  # the worker's decode
    monkeypatch.setattr(storage, "read_video", counting)  # load_frames: a decode on the GUI thread
    loader = FrameLoader()
    got = collect(loader)
    item = project.items("trajectory")[1]
    assert loader.request(project, item) is None  # the next pair's preload
    frames = loader.frames_now(project, item)  # the person labels before it finished
    assert len(calls) == 1 and loader.cached(item["id"]) is frames
    np.testing.assert_array_equal(frames, load_frames(project, item))
    qtbot.waitUntil(lambda: len(got) == 1, timeout=10_000)  # the worker's own announcement still comes
    assert not loader.pending(item["id"])


def test_at_exit_queued_decodes_are_dropped_and_the_running_one_is_waited_for(qtbot, project, monkeypatch):
    """No pool thread may still run Python code while the interpreter shuts down."""
    import time

    import app.labeling.frame_loader as fl

    real = fl.read_video
    started = threading.Event()

    def slow(*a, **k):
        started.set()
        time.sleep(0.5)
        return real(*a, **k)

    monkeypatch.setattr(fl, "read_video", slow)
    loader = FrameLoader()
    first, second = project.items("trajectory")
    assert loader.request(project, first) is None and loader.request(project, second) is None
    assert started.wait(10.0)  # the first is running, the second waits in the queue (one thread)
    fl._drain_at_exit()
    assert loader._pending[first["id"]].done.is_set()  # the running decode was waited for
    assert not loader._pending[second["id"]].done.is_set()  # the queued one never started
    assert loader._pool.activeThreadCount() == 0
