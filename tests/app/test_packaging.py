"""What the packaged app relies on: errors never pass silently, start-up is measured, the bundled
model is found where the installer puts it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _run(code: str, home: Path, *extra_env: tuple[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "RLHF_WORKBENCH_HOME": str(home), "QT_QPA_PLATFORM": "offscreen", **dict(extra_env)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=env)


@pytest.mark.parametrize("where", ["main", "thread"])
def test_headless_unhandled_exception_is_logged_and_exits_nonzero(tmp_path, where):
    out = _run(f"""
        import threading
        from app.errors import install_excepthooks, setup_logging
        setup_logging()
        install_excepthooks(show_dialog=False)
        def boom():
            raise RuntimeError("smoke boom 42")
        if "{where}" == "thread":
            t = threading.Thread(target=boom); t.start(); t.join()
            print("still running")  # never reached: the hook ends the process
        else:
            boom()
    """, tmp_path)
    from app.errors import EXIT_UNHANDLED

    assert out.returncode == EXIT_UNHANDLED, (out.stdout, out.stderr)
    assert "still running" not in out.stdout
    assert "RuntimeError: smoke boom 42" in out.stderr
    log_text = (tmp_path / "logs" / "workbench.log").read_text()
    assert "unhandled exception" in log_text and "smoke boom 42" in log_text


def test_exception_in_a_qt_slot_reaches_the_hook(tmp_path):
    """PySide6 hands exceptions raised in slots to sys.excepthook: headless, that is a failed run."""
    out = _run("""
        from PySide6.QtCore import QTimer
        from PySide6.QtWidgets import QApplication
        from app.errors import install_excepthooks, setup_logging
        setup_logging()
        install_excepthooks(show_dialog=False)
        app = QApplication([])
        def slot():
            raise ValueError("slot failure 7")
        QTimer.singleShot(0, slot)
        QTimer.singleShot(2000, app.quit)
        raise SystemExit(app.exec())
    """, tmp_path)
    assert out.returncode == 70, (out.stdout, out.stderr)
    assert "ValueError: slot failure 7" in (tmp_path / "logs" / "workbench.log").read_text()


def test_dialog_mode_keeps_running_and_logs(tmp_path, qtbot, monkeypatch, caplog):
    """With dialogs on, an error in a worker thread is shown in the GUI thread and the app goes on."""
    import threading

    import app.errors as errors

    shown = []
    monkeypatch.setattr(errors, "error_dialog", lambda title, summary, details="", parent=None:
                        shown.append((title, summary, threading.current_thread() is threading.main_thread())))
    monkeypatch.setattr(errors, "_relay", None)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    errors.install_excepthooks(show_dialog=True)  # (no setup_logging here: it would take pytest's faulthandler)
    errors.prepare_dialogs()

    def boom():
        raise KeyError("worker key")

    t = threading.Thread(target=boom)
    t.start()
    t.join()
    qtbot.waitUntil(lambda: len(shown) == 1, timeout=5000)
    assert shown == [("Unexpected error", "KeyError: 'worker key'", True)]
    assert any("worker key" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


def test_startup_time_flag_reports_the_window_and_never_blocks_on_a_dialog(tmp_path):
    """Offscreen there is nobody to close a message box: a missing project goes to the Errors panel
    and the log, and the start-up report still comes."""
    out = subprocess.run([sys.executable, "-m", "app", "--startup-time", "--project", str(tmp_path / "none.rlhf")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "RLHF_WORKBENCH_HOME": str(tmp_path), "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["platform"] == "offscreen" and report["frozen"] is False
    assert 0 < report["seconds_to_window"] < 60
    assert report["torch_loaded_at_window"] is False  # the window is built before torch is imported
    # the process clock includes the interpreter's own start, so it is never shorter
    assert report["process_age_at_window"] >= report["seconds_to_window"] - 0.05
    assert "startup time" in (tmp_path / "logs" / "workbench.log").read_text()


FIRST_START = """
import json, sys, time
from PySide6.QtWidgets import QApplication
app = QApplication([])
from app.main_window import MainWindow
window = MainWindow(interactive=False)
window.show()
assert window.open_demo_project()
torch_at_open = "torch" in sys.modules
queued_at_open = len(window.project.runs())
deadline = time.monotonic() + 90
while time.monotonic() < deadline and not (window.runner.busy or window.runner.queued_run_ids):
    app.processEvents()
    time.sleep(0.01)
runs = window.project.runs()
window.runner.shutdown(timeout=30)
print(json.dumps({"torch_at_open": torch_at_open, "queued_at_open": queued_at_open, "runs": len(runs),
                  "started": window.runner.busy or bool(runs), "message": window.statusBar().currentMessage()}))
"""


def test_first_start_builds_the_demo_project_without_freezing_on_torch(tmp_path):
    """A first start creates the demo project; its runs' configs live in modules that import torch,
    so they are submitted once a background thread has loaded torch, not while the window is built."""
    out = subprocess.run([sys.executable, "-c", FIRST_START], cwd=ROOT, capture_output=True, text=True, timeout=180,
                         env={**os.environ, "RLHF_WORKBENCH_HOME": str(tmp_path), "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["torch_at_open"] is False and report["queued_at_open"] == 0
    from rlhf_core.demo import DEMO_RUNS

    assert report["runs"] == len(DEMO_RUNS) > 0  # all submitted once torch was loaded


def test_importing_the_main_window_does_not_import_torch():
    code = "import sys, app.main_window; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_frozen_app_finds_the_bundled_gguf_through_the_resource_helper(tmp_path, monkeypatch):
    from rlhf_core.paths import resource_path
    from rlhf_core.text import model

    packaged = tmp_path / "resources" / "models" / model.GGUF_FILENAME
    packaged.parent.mkdir(parents=True)
    packaged.write_bytes(b"GGUF")
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert resource_path("models", model.GGUF_FILENAME) == packaged
    assert model.bundled_gguf_path() == packaged
    monkeypatch.delattr(sys, "_MEIPASS")
    # from a source checkout the installed package is used (the tests' venv has it)
    from tests.conftest import have_bundled_model

    if have_bundled_model():
        assert model.bundled_gguf_path().parent.name == model.GGUF_PACKAGE


def test_the_spec_bundles_the_cluster_templates_where_the_export_reads_them():
    """The cluster export reads template/ through importlib.resources, which in the frozen app looks in
    the bundle's folder of the package: the spec must put the files there (they are data, not modules)."""
    import re

    from rlhf_core.io import cluster

    template = Path(cluster.__file__).parent / "template"
    spec = (ROOT / "pyinstaller.spec").read_text()
    named = re.search(r'^CLUSTER_TEMPLATE = "([^"]+)"$', spec, re.M)
    assert named and named.group(1) == template.relative_to(ROOT).as_posix()
    assert "(str(ROOT / CLUSTER_TEMPLATE), CLUSTER_TEMPLATE)" in spec.split("datas = (", 1)[1].split("\n)", 1)[0]
    assert all((template / name).is_file() for name in cluster.TEMPLATE_FILES)


def test_error_dialog_is_plain_text_names_the_log_and_offers_the_folder(qtbot):
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox

    from app.errors import LOG_NAME, error_dialog
    from rlhf_core.paths import logs_dir

    seen = {}

    def inspect_and_close():
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(20, inspect_and_close)
            return
        seen["text"] = box.text()
        seen["format"] = box.textFormat()
        seen["details"] = box.detailedText()
        seen["buttons"] = sorted(b.text() for b in box.buttons())
        box.button(QMessageBox.StandardButton.Ok).click()

    QTimer.singleShot(0, inspect_and_close)
    error_dialog("Unexpected error", "ValueError: <b>not bold</b>", "Traceback ...")
    from PySide6.QtCore import Qt

    assert seen["format"] == Qt.TextFormat.PlainText
    assert seen["text"].startswith("ValueError: <b>not bold</b>\n\nThe app keeps running")
    assert str(logs_dir() / LOG_NAME) in seen["text"]
    assert seen["details"] == "Traceback ..."
    assert "Open Logs Folder" in seen["buttons"]
