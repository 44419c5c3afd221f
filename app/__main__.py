"""``python -m app``: start the workbench.

    python -m app                 open the last project (or the demo project on first start)
    python -m app --demo          open the built-in demo project (created on first use)
    python -m app --project P     open project folder P
    python -m app --smoke-test    offscreen: open the demo project, run one tiny job, exit 0/1
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import sys
import threading
import time
import traceback
from pathlib import Path

log = logging.getLogger("rlhf_workbench")


def setup_logging() -> Path:
    from rlhf_core.paths import logs_dir

    path = logs_dir() / "workbench.log"
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=2_000_000, backupCount=3, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return path


def install_excepthooks(show_dialog: bool) -> None:
    """Unhandled exceptions are logged and shown in a dialog; the app keeps running."""

    def hook(exc_type, exc, tb):
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        log.error("unhandled exception:\n%s", text)
        sys.stderr.write(text)
        if show_dialog:
            from PySide6.QtWidgets import QApplication, QMessageBox

            if QApplication.instance() is not None and threading.current_thread() is threading.main_thread():
                QMessageBox.critical(None, "Unexpected error", f"{exc_type.__name__}: {exc}\n\nDetails are in the log.")

    sys.excepthook = hook
    threading.excepthook = lambda args: hook(args.exc_type, args.exc_value, args.exc_traceback)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app", description="RLHF Workbench")
    parser.add_argument("--project", type=Path, help="Open this project folder.")
    parser.add_argument("--demo", action="store_true", help="Open the built-in demo project.")
    parser.add_argument("--page", choices=("project", "runs", "clips", "rank", "demo", "extrapolation", "text"), help="Page to show first.")
    parser.add_argument("--smoke-test", action="store_true",
                        help="Start offscreen, open the demo project, run one tiny job, exit 0 on success.")
    parser.add_argument("--timeout", type=float, default=180.0, help="Smoke-test time limit in seconds.")
    return parser.parse_args(argv)


def smoke_test(args: argparse.Namespace) -> int:
    """Offscreen end-to-end check: window, demo project, one background job, metrics in DB and plot."""
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow
    from rlhf_core.paths import demo_project_path
    from rlhf_core.trainers.synthetic_preferences import SyntheticPreferenceConfig

    started = time.monotonic()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = MainWindow(interactive=False)
    window.show()
    folder = args.project or demo_project_path()
    opened = window.open_project(folder) if (Path(folder) / "project.db").exists() else (
        window.open_demo_project() if args.project is None else window.open_project(folder, create=True))
    if not opened or window.project is None:
        print(f"smoke test FAILED: could not open {folder}: {window.error_panel.text.toPlainText()}", file=sys.stderr)
        return 1

    finished: dict[int, tuple[str, str]] = {}
    loop = QEventLoop()

    def on_finished(run_id, status, error):
        finished[run_id] = (status, error)
        if not window.runner.busy and not window.runner.queued_run_ids:
            loop.quit()

    window.runner.job_finished.connect(on_finished)
    run_id = window.start_run("synthetic_preferences", SyntheticPreferenceConfig(steps=40, n_pairs=400, n_items=100))
    if run_id is None:
        print("smoke test FAILED: the job could not be started", file=sys.stderr)
        return 1
    QTimer.singleShot(int(args.timeout * 1000), loop.quit)
    if run_id not in finished:
        loop.exec()
    window.runs_page.plot.redraw()
    status, error = finished.get(run_id, ("timeout", f"no result within {args.timeout:.0f} s"))
    n_db = len(window.project.metrics(run_id).get("reward_model/loss", ([], []))[0])
    _, plotted = window.runs_page.plot.plotted_data(run_id, "reward_model/loss")
    report = {"smoke_test": "ok" if status == "completed" and n_db == 40 and len(plotted) == 40 else "failed",
              "project": str(window.project.folder), "run_id": run_id, "status": status,
              "metric_rows_in_db": n_db, "points_in_plot": int(len(plotted)),
              "seconds": round(time.monotonic() - started, 2)}
    window.close()
    app.processEvents()
    print(json.dumps(report))
    if report["smoke_test"] != "ok":
        if error:
            print(error, file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.smoke_test:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import rlhf_core  # noqa: F401  (offline defaults before anything else loads)

    log_path = setup_logging()
    install_excepthooks(show_dialog=not args.smoke_test)
    log.info("starting RLHF Workbench (log: %s)", log_path)
    # Import torch in the main thread before any worker starts (see docs/performance.md).
    import torch  # noqa: F401
    from PySide6.QtWidgets import QApplication

    if args.smoke_test:
        try:
            return smoke_test(args)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            return 1

    from app.main_window import MainWindow

    app = QApplication(sys.argv[:1])
    app.setApplicationName("RLHF Workbench")
    window = MainWindow()
    window.show()
    if args.project is not None:
        window.open_project(args.project)
    elif args.demo:
        window.open_demo_project()
    elif window.settings.last_project and (Path(window.settings.last_project) / "project.db").exists():
        window.open_project(window.settings.last_project)
    else:
        window.open_demo_project()
    if args.page:
        window.show_page(args.page)
    return app.exec()


if __name__ == "__main__":
    raise SystemExit(main())
