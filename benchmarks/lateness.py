"""A 10 ms precise QTimer in the GUI thread: how late its ticks come is how long the event loop was busy
(the window could not repaint or take a key). Shared by the GUI benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from PySide6.QtCore import QEventLoop, Qt, QTimer


def run_ticking(seconds: float | None = None, start: Callable[[], None] | None = None,
                done: Callable[[], bool] | None = None, interval_ms: int = 10) -> tuple[np.ndarray, float]:
    """Run the event loop with the ticking timer for ``seconds``, or, with ``done``, until it returns
    True (polled every 5 ms; ``start`` is called from the loop 30 ms in). Returns (lateness of each
    tick in ms, wall seconds from ``start`` to the end)."""
    stamps: list[float] = []
    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.setInterval(interval_ms)
    timer.timeout.connect(lambda: stamps.append(time.perf_counter()))
    loop = QEventLoop()
    poll = QTimer()
    poll.setInterval(5)
    if done is not None:
        poll.timeout.connect(lambda: loop.quit() if done() else None)
        QTimer.singleShot(40, poll.start)
    if seconds is not None:
        QTimer.singleShot(int(seconds * 1000), loop.quit)
    began = [time.perf_counter()]
    if start is not None:
        def kick() -> None:
            began[0] = time.perf_counter()
            start()
        QTimer.singleShot(30, kick)
    timer.start()
    loop.exec()
    wall = time.perf_counter() - began[0]
    timer.stop()
    poll.stop()
    intervals = np.diff(np.asarray(stamps))
    return np.clip(intervals * 1000.0 - interval_ms, 0.0, None), wall
