"""``python -m app``: start the workbench.

    python -m app                 open the last project (or the demo project on first start)
    python -m app --demo          open the built-in demo project (created on first use)
    python -m app --project P     open project folder P
    python -m app --smoke-test    offscreen end-to-end check (app/smoke.py), exit 0/1
    python -m app --startup-time  start as usual, print how long the window took, exit

The packaged app (pyinstaller.spec) runs this same module; ``rlhf-workbench --smoke-test`` is what
CI runs on the frozen build.
"""

from __future__ import annotations

import time

_MODULE_STARTED = time.monotonic()  # before any heavy import: the start of the startup clock

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

from app.errors import install_excepthooks, prepare_dialogs, report_startup_error, setup_logging  # noqa: E402
from app.pages import PAGES  # noqa: E402
from app.smoke import smoke_test  # noqa: E402
from app.startup_clock import cpu_seconds, process_age_seconds  # noqa: E402

log = logging.getLogger("rlhf_workbench")


def show_splash(app):
    """A small 'starting' window with the app icon, shown while the heavy modules load (None if
    it cannot be drawn)."""
    try:
        from PySide6.QtCore import QRect, Qt
        from PySide6.QtGui import QColor, QFont, QIcon, QPainter, QPixmap
        from PySide6.QtWidgets import QSplashScreen

        from rlhf_core import __version__
        from rlhf_core.paths import resource_path

        pixmap = QPixmap(440, 150)
        pixmap.fill(QColor("#f4f6f8"))
        painter = QPainter(pixmap)
        icon = QIcon(str(resource_path("icons", "app.svg")))
        icon.paint(painter, QRect(24, 27, 96, 96))
        font = QFont(painter.font())
        font.setPointSize(16)
        font.setBold(True)
        painter.setFont(font)
        painter.setPen(QColor("#1f2933"))
        painter.drawText(QRect(140, 36, 290, 36), Qt.AlignmentFlag.AlignLeft, "RLHF Workbench")
        font.setPointSize(10)
        font.setBold(False)
        painter.setFont(font)
        painter.setPen(QColor("#52606d"))
        painter.drawText(QRect(140, 78, 290, 44), Qt.AlignmentFlag.AlignLeft,
                         f"version {__version__}\nstarting\u2026")
        painter.end()
        splash = QSplashScreen(pixmap)
        splash.show()
        app.processEvents()
        return splash
    except Exception:  # noqa: BLE001 - the splash is a courtesy; the main window still comes
        log.exception("could not show the splash screen")
        return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app", description="RLHF Workbench")
    parser.add_argument("--project", type=Path, help="Open this project folder.")
    parser.add_argument("--demo", action="store_true", help="Open the built-in demo project.")
    parser.add_argument("--page", choices=[page.name for page in PAGES], help="Page to show first.")
    parser.add_argument("--smoke-test", action="store_true",
                        help="Start offscreen, open (or create) the demo project, run a tiny rollout, reward-model "
                             "and text-generation job, check their rows in the project, print a JSON report and "
                             "exit 0 only if everything worked.")
    parser.add_argument("--smoke-model", type=Path, default=None,
                        help="Smoke test: generate with this model folder instead of the bundled model "
                             "(the source-tree test uses a tiny random model).")
    parser.add_argument("--startup-time", action="store_true",
                        help="Start as usual, print a JSON line with the seconds until the window was shown, exit.")
    parser.add_argument("--timeout", type=float, default=600.0, help="Smoke-test time limit in seconds.")
    return parser.parse_args(argv)


def _first_window(args: argparse.Namespace, *, interactive: bool = True):
    """Create the window and open the project a person would see first."""
    from PySide6.QtCore import QTimer

    from app.main_window import MainWindow

    window = MainWindow(interactive=interactive)
    window.show()
    # Runs the first project starts (the demo project's, on a first start) wait until the window is
    # painted: their thread imports torch, which would otherwise slow the window down.
    window.runner.hold()
    QTimer.singleShot(0, window.runner.release)
    if args.project is not None:
        window.open_project(args.project)
    elif args.demo:
        window.open_demo_project()
    elif window.settings.last_project and (Path(window.settings.last_project) / "project.db").exists():
        window.open_project(window.settings.last_project)
    else:  # first start: the demo project, created and filled in live
        window.open_demo_project()
    if args.page:
        window.show_page(args.page)
    return window


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.smoke_test:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    headless = args.smoke_test or args.startup_time or os.environ.get("QT_QPA_PLATFORM") == "offscreen"
    import rlhf_core  # noqa: F401  (offline defaults before anything else loads)

    log_path = setup_logging()
    install_excepthooks(show_dialog=not headless)
    log.info("starting RLHF Workbench (log: %s, frozen: %s)", log_path, bool(getattr(sys, "frozen", False)))
    splash = splash_seconds = None
    try:
        from PySide6.QtWidgets import QApplication

        if args.smoke_test:
            importlib.import_module("torch")  # main thread, before any worker (docs/performance.md)
            return smoke_test(args, _MODULE_STARTED)

        app = QApplication.instance() or QApplication(sys.argv[:1])
        app.setApplicationName("RLHF Workbench")
        prepare_dialogs()
        # Something on screen at once: loading torch and the pages takes seconds on a slow machine,
        # and a person who double-clicked must not wonder whether anything happened.
        splash = show_splash(app)
        splash_seconds = round(time.monotonic() - _MODULE_STARTED, 2)
        # The window is built without torch (3+ s to import): the pages import it only when they
        # need it, jobs in their own thread, and a background thread loads it once the window is up.
        window = _first_window(args, interactive=not headless)
        if splash is not None:
            splash.finish(window)
    except Exception as exc:  # noqa: BLE001 - shown to the person, never a silent exit
        if args.smoke_test:
            traceback.print_exc()
            return 1
        if splash is not None:
            splash.close()  # or it would cover the error dialog
        return report_startup_error(exc, show_dialog=not headless)

    if args.startup_time:
        from PySide6.QtCore import QTimer

        def report() -> None:  # runs once the window has been laid out and painted
            seconds = {"seconds_to_window": round(time.monotonic() - _MODULE_STARTED, 2),
                       "torch_loaded_at_window": "torch" in sys.modules,
                       "process_age_at_window": process_age_seconds(),
                       "cpu_seconds_at_window": cpu_seconds(), "seconds_to_splash": splash_seconds,
                       "frozen": bool(getattr(sys, "frozen", False)),
                       "platform": QApplication.platformName()}
            print(json.dumps(seconds), flush=True)
            log.info("startup time: %s", json.dumps(seconds))
            window.close()
            app.quit()

        QTimer.singleShot(0, report)
    from PySide6.QtCore import QTimer

    QTimer.singleShot(0, window.preload_torch)  # after the first paint (zero-delay timers run in order)
    return app.exec()


if __name__ == "__main__":
    raise SystemExit(main())
