"""Decode trajectory and clip videos off the GUI thread.

Decoding a video is the slow part of showing a trajectory (a 50-frame clip of HalfCheetah takes
0.1-0.2 s; a clip in a video without frequent keyframes also decodes the frames before it). Views ask a
:class:`FrameLoader` for an item's frames: the project is read on the GUI thread (SQLite connections
stay on their thread), the decoding runs on one worker thread, and ``loaded(key, frames)`` arrives back
on the GUI thread. Results are kept in a small LRU cache. ``clear()`` (a new project) drops the cache
and makes results of requests made before it arrive nowhere. At interpreter exit every loader's
queue is dropped and the decode in flight is waited for (:func:`_drain_at_exit`): a pool thread
still running Python code while the interpreter shuts down makes Qt print "exceptions thrown in worker
threads must be caught".
"""

from __future__ import annotations

import atexit
import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from rlhf_core.envs.storage import frame_source, load_frames, read_video

EMPTY = np.zeros((0, 0, 0, 3), dtype=np.uint8)


_LIVE: weakref.WeakSet = weakref.WeakSet()  # every FrameLoader not yet garbage-collected


@atexit.register
def _drain_at_exit(msecs: int = 10_000) -> None:
    """Drop queued decodes and wait for the ones running, so that no pool thread runs Python code while
    the interpreter shuts down."""
    for loader in list(_LIVE):
        try:
            loader._pool.clear()
            loader._pool.waitForDone(msecs)
        except RuntimeError:  # its C++ side is already gone, and with it the pool (which waited)
            pass


class _Relay(QObject):
    done = Signal(int, object, object, str)  # generation, key, frames (or None), error


class _Ticket:
    """One decode in flight: the GUI thread can wait for it instead of decoding the same video again."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.frames: np.ndarray | None = None
        self.error = ""


class _Decode(QRunnable):
    def __init__(self, loader: FrameLoader, generation: int, key: Hashable, source: tuple, ticket: _Ticket):
        super().__init__()
        self.relay, self.threads = loader._relay, loader.decode_threads
        self.generation, self.key, self.source, self.ticket = generation, key, source, ticket

    def run(self) -> None:
        # Nothing may escape run(): Qt aborts the process on an exception from a pool thread.
        self.threads.add(threading.get_ident())
        try:
            frames, error = read_video(*self.source), ""
        except Exception as exc:  # a broken or missing video file: say so, keep the app running
            frames, error = None, f"{type(exc).__name__}: {exc}"
        self.ticket.frames, self.ticket.error = frames, error
        self.ticket.done.set()
        try:
            self.relay.done.emit(self.generation, self.key, frames, error)
        except RuntimeError:  # the view (and its relay) went away while this video decoded
            pass


class FrameLoader(QObject):
    """An LRU cache of decoded frames, filled by a worker thread."""

    loaded = Signal(object, object)  # key, frames [N, H, W, 3] uint8
    failed = Signal(object, str)  # key, message

    def __init__(self, parent: QObject | None = None, capacity: int = 16):
        super().__init__(parent)
        self.capacity = capacity
        self._cache: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._pending: dict[Hashable, _Ticket] = {}
        self._generation = 0
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)  # one decode at a time: the GUI and training keep the other core
        self._relay = _Relay(self)
        self._relay.done.connect(self._on_done)
        self.decode_threads: set[int] = set()  # thread ids that decoded (the GUI thread must not be one)
        _LIVE.add(self)

    # ------------------------------------------------------------------ cache
    def cached(self, key: Hashable) -> np.ndarray | None:
        frames = self._cache.get(key)
        if frames is not None:
            self._cache.move_to_end(key)
        return frames

    def _put(self, key: Hashable, frames: np.ndarray) -> None:
        self._cache[key] = frames
        self._cache.move_to_end(key)
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)

    def clear(self) -> None:
        """Forget everything (a new project): results still being decoded are dropped when they arrive."""
        self._generation += 1
        self._cache.clear()
        self._pending.clear()

    def pending(self, key: Hashable) -> bool:
        return key in self._pending

    # ------------------------------------------------------------------ requests
    def request(self, project, item: dict, *, key: Hashable | None = None, start: int | None = None,
                end: int | None = None) -> np.ndarray | None:
        """The item's frames if cached (``loaded`` is not emitted then); otherwise None, and they are
        decoded on the worker thread and announced by ``loaded(key, frames)``. ``key`` defaults to the
        item id; ``start``/``end`` pick frames of the item's own video (a thumbnail: ``mid, mid + 1``)."""
        key = item["id"] if key is None else key
        frames = self.cached(key)
        if frames is not None:
            return frames
        if key in self._pending:
            return None
        source = frame_source(project, item)
        if source is None:
            self._put(key, EMPTY)
            return EMPTY
        if start is not None or end is not None:
            source = (source[0], source[1] + (start or 0), None if end is None else source[1] + end)
        ticket = self._pending[key] = _Ticket()
        self._pool.start(_Decode(self, self._generation, key, source, ticket))
        return None

    def frames_now(self, project, item: dict) -> np.ndarray:
        """The item's frames, decoding them here if they are not cached (for the pair a person is about
        to label: better a short wait than an empty panel). If the worker is decoding them, wait for it
        rather than decode the same video twice."""
        frames = self.cached(item["id"])
        ticket = self._pending.get(item["id"])
        if frames is None and ticket is not None and ticket.done.wait(30.0) and ticket.frames is not None:
            frames = ticket.frames
            self._put(item["id"], frames)
        if frames is None:
            frames = load_frames(project, item)
            self._put(item["id"], frames)
        return frames

    def wait(self, msecs: int = 30_000) -> bool:
        """Block until the worker is idle (tests, shutting down)."""
        return self._pool.waitForDone(msecs)

    def _on_done(self, generation: int, key: Hashable, frames, error: str) -> None:
        if generation != self._generation:
            return  # asked for by the previous project
        self._pending.pop(key, None)
        if frames is None:
            self.failed.emit(key, error)
            return
        self._put(key, frames)
        self.loaded.emit(key, frames)
