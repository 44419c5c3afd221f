"""What a person sees when something goes wrong, and where the details go.

- :func:`setup_logging`: everything is logged to ``logs_dir()/workbench.log`` (rotated), and a hard
  crash (segmentation fault, abort) leaves a Python traceback in ``logs_dir()/crash.log``.
- :func:`install_excepthooks`: an unhandled exception (GUI thread or any other thread) is logged
  and shown in a dialog; the app keeps running. In headless runs (``--smoke-test``, offscreen
  tests) there is nobody to click a dialog: the traceback goes to stderr and the process exits
  with :data:`EXIT_UNHANDLED`, so a failure can never look like success.
- :func:`report_startup_error`: an error before the window exists is still shown in a dialog (a
  packaged app has no terminal, so a silent exit would leave a person with nothing).

The Help menu's "Open Logs Folder" and "About" use :func:`open_logs_folder` and :func:`about_text`.
"""

from __future__ import annotations

import faulthandler
import logging
import logging.handlers
import os
import platform
import sys
import threading
import traceback
from pathlib import Path

log = logging.getLogger("rlhf_workbench")

LOG_NAME = "workbench.log"
CRASH_LOG_NAME = "crash.log"
EXIT_UNHANDLED = 70  # EX_SOFTWARE: an unhandled exception in a headless run
_crash_file = None  # kept open for faulthandler for the life of the process
_relay = None  # the GUI-thread object that shows dialogs (see _DialogRelay)


def setup_logging() -> Path:
    """Log to the per-user log folder; returns the log file's path. Safe to call twice."""
    global _crash_file
    from rlhf_core.paths import logs_dir

    folder = logs_dir()
    path = folder / LOG_NAME
    _fill_missing_std_streams(folder)
    root = logging.getLogger()
    if not any(getattr(h, "_workbench_log", False) for h in root.handlers):
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=2_000_000, backupCount=3, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._workbench_log = True
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    if _crash_file is None:
        try:
            _crash_file = open(folder / CRASH_LOG_NAME, "a", encoding="utf-8")  # noqa: SIM115
            faulthandler.enable(file=_crash_file, all_threads=True)
        except OSError:
            _crash_file = None
    return path


def _fill_missing_std_streams(folder: Path) -> None:
    """A windowed build on Windows/macOS starts with ``sys.stdout``/``sys.stderr`` set to None."""
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(folder / f"{name}.txt", "a", encoding="utf-8", buffering=1))  # noqa: SIM115


def format_exception(exc_type, exc, tb) -> str:
    return "".join(traceback.format_exception(exc_type, exc, tb))


def install_excepthooks(show_dialog: bool) -> None:
    """Route unhandled exceptions of every thread to the log and to a dialog (or to an exit code).

    ``show_dialog=False`` (headless): print to stderr and end the process with
    :data:`EXIT_UNHANDLED` (``os._exit``: a half-working headless run must not report success).
    """

    def hook(exc_type, exc, tb):
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        text = format_exception(exc_type, exc, tb)
        where = threading.current_thread().name
        log.error("unhandled exception in thread %s:\n%s", where, text)
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass
        if not show_dialog:
            logging.shutdown()
            os._exit(EXIT_UNHANDLED)
        _show_error_dialog(f"{exc_type.__name__}: {exc}", text)

    sys.excepthook = hook
    threading.excepthook = lambda args: hook(args.exc_type, args.exc_value, args.exc_traceback)


def _show_error_dialog(summary: str, details: str) -> None:
    """Show the dialog in the GUI thread, whichever thread the error happened in."""
    relay = _ensure_relay()
    if relay is None:
        return
    relay.error.emit(summary, details)  # queued to the GUI thread when emitted from another thread


def _ensure_relay():
    global _relay
    if _relay is not None:
        return _relay
    try:
        from PySide6.QtWidgets import QApplication
    except ImportError:
        return None
    app = QApplication.instance()
    if app is None or threading.current_thread() is not threading.main_thread():
        return None  # created from the GUI thread only: see prepare_dialogs()
    _relay = _make_relay()
    return _relay


def prepare_dialogs() -> None:
    """Create the dialog relay in the GUI thread (call once the QApplication exists)."""
    _ensure_relay()


def _make_relay():
    from PySide6.QtCore import QObject, Signal, Slot

    class _DialogRelay(QObject):
        """Lives in the GUI thread; one error dialog at a time (later errors only go to the log)."""

        error = Signal(str, str)

        def __init__(self):
            super().__init__()
            self.showing = False
            self.suppressed = 0
            self.error.connect(self.show)

        @Slot(str, str)
        def show(self, summary: str, details: str) -> None:
            if self.showing:
                self.suppressed += 1
                return
            self.showing = True
            try:
                error_dialog("Unexpected error", summary, details)
            finally:
                self.showing = False

    return _DialogRelay()  # made in the GUI thread, so its slot runs there


def error_dialog(title: str, summary: str, details: str = "", parent=None, *, keeps_running: bool = True) -> None:
    """A modal error box with the details folded away and a button that opens the log folder."""
    from PySide6.QtWidgets import QMessageBox

    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Critical)
    box.setWindowTitle(title)
    box.setTextFormat(_plain_text())
    after = "The app keeps running; details" if keeps_running else "Details"
    box.setText(f"{summary}\n\n{after} are in the log file:\n{_log_file()}")
    if details:
        box.setDetailedText(details)
    open_logs = box.addButton("Open Logs Folder", QMessageBox.ButtonRole.ActionRole)
    box.addButton(QMessageBox.StandardButton.Ok)
    box.exec()
    if box.clickedButton() is open_logs:
        open_logs_folder()


def _log_file() -> Path:
    from rlhf_core.paths import logs_dir

    return logs_dir() / LOG_NAME


def _plain_text():
    from PySide6.QtCore import Qt

    return Qt.TextFormat.PlainText


def report_startup_error(exc: BaseException, *, show_dialog: bool) -> int:
    """Log an error that stopped the app from starting and, when there is a screen, show it."""
    text = format_exception(type(exc), exc, exc.__traceback__)
    log.error("the app could not start:\n%s", text)
    try:
        sys.stderr.write(text)
    except (AttributeError, OSError, ValueError):
        pass
    if show_dialog:
        try:
            from PySide6.QtWidgets import QApplication

            app = QApplication.instance() or QApplication(sys.argv[:1])  # must live while the dialog shows
            error_dialog("RLHF Workbench could not start", f"{type(exc).__name__}: {exc}", text,
                         keeps_running=False)
            app.processEvents()
        except Exception:  # noqa: BLE001 - no way left to show it; the log has it
            log.exception("could not show the start-up error dialog")
    return 1


def file_error_text(exc: BaseException, path: str | os.PathLike, project_folder: str | os.PathLike | None = None
                    ) -> str:
    """A sentence naming ``path`` for an error met while opening, reading or importing it (no
    traceback). The core's own errors (a project's, a TRL or prompt file's) are complete messages.
    ``project_folder``: the project an import writes into (a full disk or a read-only database is its)."""
    import errno
    import sqlite3

    from rlhf_core.input_files import InputFileError
    from rlhf_core.store import ProjectError, friendly_db_error

    if isinstance(exc, (ProjectError, InputFileError)):
        return str(exc)
    if isinstance(exc, sqlite3.Error) or (isinstance(exc, OSError) and exc.errno == errno.ENOSPC):
        friendly = friendly_db_error(exc, project_folder or path)
        if friendly is not None:
            return str(friendly)
    if isinstance(exc, OSError):
        return f"Cannot read {path}: {exc.strerror or exc}."
    name = Path(path).name or str(path)
    if isinstance(exc, UnicodeError):
        return f"{name}: the text is not valid UTF-8, or holds an unpaired surrogate ({getattr(exc, 'reason', exc)})."
    if isinstance(exc, RecursionError):
        return f"{name}: its JSON is nested too deeply to read."
    if isinstance(exc, MemoryError):
        return f"{name}: too large to read into memory."
    return f"{name}: {exc}"


def open_logs_folder() -> None:
    from PySide6.QtCore import QUrl
    from PySide6.QtGui import QDesktopServices

    from rlhf_core.paths import logs_dir

    QDesktopServices.openUrl(QUrl.fromLocalFile(str(logs_dir())))


def about_text() -> str:
    """Version and build facts for the About box and bug reports."""
    from rlhf_core import __version__
    from rlhf_core.paths import logs_dir
    from rlhf_core.runtime import is_frozen

    build = "installed app" if is_frozen() else "source checkout"
    return (f"RLHF Workbench {__version__} ({build})\n"
            f"Python {platform.python_version()} on {platform.system()} {platform.machine()}\n"
            f"Logs: {logs_dir()}")
