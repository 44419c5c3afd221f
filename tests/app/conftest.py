"""App tests: a real MainWindow offscreen (pytest-qt), a real project in tmp_path."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")


@pytest.fixture
def settings(tmp_path):
    from app.settings import Settings

    return Settings(str(tmp_path / "settings.ini"))


@pytest.fixture
def window(qtbot, tmp_path, settings):
    from app.main_window import MainWindow

    w = MainWindow(settings, interactive=False)
    qtbot.addWidget(w)
    w.show()
    assert w.open_project(tmp_path / "app.rlhf", create=True)
    yield w
    w.runner.shutdown(timeout=10)


def wait_finished(qtbot, window, run_id, timeout=60_000):
    """Wait until the runner reports ``run_id`` finished; returns (status, error)."""
    box = {}

    def on_finished(rid, status, error):
        if rid == run_id:
            box["done"] = (status, error)

    window.runner.job_finished.connect(on_finished)
    try:
        qtbot.waitUntil(lambda: "done" in box, timeout=timeout)
    finally:
        window.runner.job_finished.disconnect(on_finished)
    return box["done"]


def wait_saved(qtbot, timeout=10_000):
    """Wait until the label writer has acked every write the views handed it."""
    from app.labeling.writer import pending_writes

    qtbot.waitUntil(lambda: pending_writes() == 0, timeout=timeout)


def queued(qtbot, view) -> list[int]:
    """Queue the text view's pairs and wait for the writer: the new queue ids."""
    write = view.queue_pairs()
    wait_saved(qtbot)
    return write.result
