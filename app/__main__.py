"""``python -m app``: start the workbench.

    python -m app                 open the last project (or the demo project on first start)
    python -m app --demo          open the built-in demo project (created on first use)
    python -m app --project P     open project folder P
    python -m app --smoke-test    offscreen end-to-end check (see smoke_test), exit 0/1
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

log = logging.getLogger("rlhf_workbench")


def process_age_seconds() -> float | None:
    """Seconds since this process was created (Linux: /proc, 10 ms resolution); None elsewhere.

    Unlike a clock started in Python, this includes the interpreter's (or the frozen app's
    bootloader's) own start-up.
    """
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            stat = fh.read()
        start_ticks = int(stat[stat.rindex(")") + 2:].split()[19])  # field 22: starttime
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
        return round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def cpu_seconds() -> float | None:
    """CPU time (user + system, all threads) this process has used: a start-up cost that, unlike the
    wall clock, does not grow when other programs share the CPU."""
    try:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        return round(usage.ru_utime + usage.ru_stime, 2)
    except (ImportError, OSError):
        return None


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
    parser.add_argument("--page", choices=("project", "runs", "clips", "rank", "demo", "extrapolation", "generate", "text",
                                           "text_rm", "text_rl"), help="Page to show first.")
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


# The smoke test's jobs: small enough for a 2-core CI machine, big enough to touch every layer
# (Gymnasium + rendering + video encoding, the reward trainer, the language model).
SMOKE_ROLLOUT = {"env_id": "CartPole-v1", "policy": "random", "episodes": 1, "noise_schedule": "drex_discrete",
                 "max_steps": 30, "record_video": True, "seed": 0}  # 5 noise levels x 1 episode
SMOKE_ROLLOUT_TRAJECTORIES = 5
SMOKE_REWARD = {"env_id": "CartPole-v1", "source": "drex", "snippet_pairs": 40, "snippet_min": 3, "snippet_max": 8,
                "members": 1, "hidden": 16, "steps": 100, "heldout_fraction": 0.0, "seed": 0}
SMOKE_ENVS = ("CartPole-v1", "LunarLander-v3", "HalfCheetah-v5", "ALE/Enduro-v5")  # one per family
SMOKE_GENERATE = {"prompt_set": "starter", "max_prompts": 1, "samples_per_prompt": 1, "max_new_tokens": 8,
                  "batch_size": 1, "seed": 0}


def check_env_families(env_ids=SMOKE_ENVS) -> dict[str, dict]:
    """Make, step and render one environment of each family the app ships (classic control, Box2D,
    MuJoCo, Atari): in a packaged app each needs its own data files, libraries and hidden imports."""
    import numpy as np

    from rlhf_core.envs.make import close_env, make_env, render_frame

    out = {}
    for env_id in env_ids:
        t0 = time.monotonic()
        try:
            env = make_env(env_id, render=True)
            try:
                env.reset(seed=0)
                env.action_space.seed(0)
                for _ in range(3):
                    env.step(env.action_space.sample())
                frame = render_frame(env)
            finally:
                close_env(env)
            ok = frame.ndim == 3 and frame.shape[2] == 3 and int(frame.max()) > 0 and float(np.std(frame)) > 0
            out[env_id] = {"ok": bool(ok), "frame": list(frame.shape), "seconds": round(time.monotonic() - t0, 2)}
        except Exception as exc:  # noqa: BLE001 - reported, and fails the smoke test
            out[env_id] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return out


def smoke_test(args: argparse.Namespace) -> int:
    """Offscreen end-to-end check of the app as it ships.

    Opens the demo project (creating it, with its own runs, on a fresh per-user folder), then runs
    through the GUI's job runner: a CartPole rollout with a random policy (5 short trajectories
    with video), a reward model on those trajectories (D-REX noise ranking), and a generation of
    one response to one prompt (the bundled model, converted on first use, unless
    ``--smoke-model`` names a folder). Passes only if every job completed and left the expected
    rows in the project database (and the reward curve reached the plot), and one environment of
    each family (classic control, Box2D, MuJoCo, Atari) can be made, stepped and rendered.
    """
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow
    from rlhf_core import config as cfg
    from rlhf_core import kinds
    from rlhf_core.jobs import get_job
    from rlhf_core.paths import demo_project_path
    from rlhf_core.text.model import default_model_dir, is_converted, read_marker

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
    app.processEvents()
    window_seconds = round(time.monotonic() - _MODULE_STARTED, 2)
    process_age = process_age_seconds()
    window_cpu = cpu_seconds()

    finished: dict[int, tuple[str, str]] = {}
    began: dict[int, float] = {}
    ended: dict[int, float] = {}
    loop = QEventLoop()

    def on_started(run_id):
        began[run_id] = time.monotonic()

    def on_finished(run_id, status, error):
        finished[run_id] = (status, error)
        ended[run_id] = time.monotonic()
        if not window.runner.busy and not window.runner.queued_run_ids:
            loop.quit()

    window.runner.job_started.connect(on_started)
    window.runner.job_finished.connect(on_finished)
    # runs of a freshly created demo project are already running or queued: they must pass too
    demo_runs = ([window.runner.current_run_id] if window.runner.busy else []) + window.runner.queued_run_ids
    if window.runner.busy:  # started while the project opened: timed from here (a little short)
        began[window.runner.current_run_id] = time.monotonic()
    use_bundled = args.smoke_model is None
    converted_before = is_converted(default_model_dir())
    generate = dict(SMOKE_GENERATE, model="" if use_bundled else str(args.smoke_model))
    jobs = [("rollouts", SMOKE_ROLLOUT), ("reward_model", SMOKE_REWARD), ("generate", generate)]
    run_ids: dict[str, int] = {}
    for name, settings in jobs:  # the runner runs them one after another, in this order
        run_id = window.start_run(name, cfg.from_dict(get_job(name).config_class(), settings))
        if run_id is None:
            print(f"smoke test FAILED: the {name} job could not be started: "
                  f"{window.error_panel.text.toPlainText()}", file=sys.stderr)
            return 1
        run_ids[name] = run_id
    QTimer.singleShot(int(args.timeout * 1000), loop.quit)
    if not all(r in finished for r in [*demo_runs, *run_ids.values()]):
        loop.exec()
    window.runs_page.plot.redraw()

    project = window.project
    db = project.conn

    def count(sql: str, *params) -> int:
        return int(db.execute(sql, params).fetchone()[0])

    def status_of(run_id: int) -> tuple[str, str]:
        return finished.get(run_id, ("timeout", f"no result within {args.timeout:.0f} s"))

    def seconds_of(run_id: int) -> float | None:
        return round(ended[run_id] - began[run_id], 2) if run_id in began and run_id in ended else None

    checks: dict[str, dict] = {}
    envs = check_env_families()  # after the jobs: a job thread must not render while this one does
    for run_id in demo_runs:
        status, _ = status_of(run_id)
        kind = project.get_run(run_id)["kind"]
        checks[f"demo:{kind}"] = {"run_id": run_id, "status": status, "seconds": seconds_of(run_id),
                                  "ok": status == "completed"}
    rid = run_ids["rollouts"]
    n_traj = count("SELECT COUNT(*) FROM items WHERE run_id=? AND kind='trajectory' AND env_id='CartPole-v1'", rid)
    checks["rollouts"] = {"run_id": rid, "status": status_of(rid)[0], "seconds": seconds_of(rid),
                          "trajectories": n_traj,
                          "ok": status_of(rid)[0] == "completed" and n_traj == SMOKE_ROLLOUT_TRAJECTORIES}
    rid = run_ids["reward_model"]
    key = "reward_model/m0_loss"
    from rlhf_core.rewards.training import FitSettings

    every = FitSettings().eval_every  # the trainer logs its metrics every eval_every steps and at the end
    want_rows = sum(1 for s in range(SMOKE_REWARD["steps"]) if (s + 1) % every == 0 or s == SMOKE_REWARD["steps"] - 1)
    n_loss = count("SELECT COUNT(*) FROM metrics WHERE run_id=? AND key=?", rid, key)
    n_ckpt = count("SELECT COUNT(*) FROM checkpoints WHERE run_id=? AND kind=?", rid, kinds.REWARD_ENSEMBLE)
    _, plotted = window.runs_page.plot.plotted_data(rid, key)
    checks["reward_model"] = {"run_id": rid, "status": status_of(rid)[0], "seconds": seconds_of(rid),
                              "metric_rows_in_db": n_loss, "points_in_plot": int(len(plotted)),
                              "checkpoints": n_ckpt,
                              "ok": status_of(rid)[0] == "completed" and n_loss == want_rows
                              and len(plotted) == want_rows and n_ckpt == 1}
    rid = run_ids["generate"]
    responses = db.execute("SELECT length, text FROM items WHERE run_id=? AND kind='response'", [rid]).fetchall()
    outcome = window.runner.outcome(rid)
    result = outcome.result if outcome is not None and isinstance(outcome.result, dict) else {}
    gen = {"run_id": rid, "status": status_of(rid)[0], "seconds": seconds_of(rid),
           "model": "bundled" if use_bundled else str(args.smoke_model), "responses": len(responses),
           "new_tokens": sum(int(r[0] or 0) for r in responses), "load_seconds": result.get("load_seconds"),
           "tokens_per_second": result.get("tokens_per_second")}
    if use_bundled:
        gen["converted_now"] = not converted_before and is_converted(default_model_dir())
        gen["conversion_seconds"] = read_marker(default_model_dir()).get("conversion_seconds") \
            if gen["converted_now"] else None
    gen["ok"] = gen["status"] == "completed" and len(responses) == 1 and gen["new_tokens"] >= 1
    checks["generate"] = gen

    ok = all(c["ok"] for c in checks.values()) and all(e["ok"] for e in envs.values())
    report = {"smoke_test": "ok" if ok else "failed", "project": str(project.folder),
              "frozen": bool(getattr(sys, "frozen", False)), "window_seconds": window_seconds,
              "process_age_at_window": process_age, "cpu_seconds_at_window": window_cpu, "jobs": checks, "envs": envs,
              "seconds": round(time.monotonic() - started, 2)}
    window.close()
    app.processEvents()
    print(json.dumps(report))
    log.info("smoke test: %s", json.dumps(report))
    if not ok:
        for run_id, (status, error) in finished.items():
            if status != "completed" and error:
                print(f"run {run_id} {status}:\n{error}", file=sys.stderr)
        return 1
    return 0


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
            return smoke_test(args)

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
