"""Screenshots of every page of the app on the demo project, at 1280x720 and 1920x1080 (run under Xvfb).

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python scripts/screenshot_pages.py docs/images/pages

Opens the demo project in a fresh per-user folder, waits until its first runs are done, then shows each
page of ``app.pages.PAGES`` at both sizes and saves ``<page>-<w>x<h>.png``. Look at every one.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RLHF_WORKBENCH_HOME", tempfile.mkdtemp(prefix="screens-home-"))
os.environ.setdefault("QT_QPA_PLATFORM", "xcb")

SIZES = ((1280, 720), (1920, 1080))


def main(out: Path, wait_s: float = 300.0) -> None:
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow
    from app.pages import PAGES
    from app.settings import Settings

    qt = QApplication.instance() or QApplication(sys.argv)
    settings = Settings(str(Path(os.environ["RLHF_WORKBENCH_HOME"]) / "settings.ini"))
    window = MainWindow(settings, interactive=False)
    window.show()
    window.open_demo_project()
    deadline = time.monotonic() + wait_s
    idle_since = None
    while time.monotonic() < deadline:  # the demo project's first runs, then a quiet second
        qt.processEvents()
        runs = window.project.runs() if window.project is not None else []
        busy = not runs or any(r["status"] in ("queued", "running") for r in runs)
        idle_since = None if busy else (idle_since or time.monotonic())
        if idle_since is not None and time.monotonic() - idle_since > 2.0:
            break
        time.sleep(0.05)
    out.mkdir(parents=True, exist_ok=True)
    for width, height in SIZES:
        window.resize(width, height)
        for page in PAGES:
            window.show_page(page.name)
            settle = time.monotonic() + 1.5
            while time.monotonic() < settle:
                qt.processEvents()
                time.sleep(0.02)
            path = out / f"{page.name}-{width}x{height}.png"
            window.grab().save(str(path))
            print(path, window.width(), window.height())
    window.runner.shutdown(timeout=10)
    window.close()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images/pages"))
