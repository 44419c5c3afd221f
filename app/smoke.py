"""``python -m app --smoke-test``: an offscreen end-to-end check of the app as it ships (the
packaged app runs it too: ``rlhf-workbench --smoke-test``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from app.startup_clock import cpu_seconds, process_age_seconds

log = logging.getLogger("rlhf_workbench")

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


def smoke_test(args: argparse.Namespace, module_started: float) -> int:
    """Offscreen end-to-end check of the app as it ships.

    Opens the demo project (creating it, with its own runs, on a fresh per-user folder), then runs
    through the GUI's job runner: a CartPole rollout with a random policy (5 short trajectories
    with video), a reward model on those trajectories (D-REX noise ranking), and a generation of
    one response to one prompt (the bundled model, converted on first use, unless
    ``--smoke-model`` names a folder). Passes only if every job completed and left the expected
    rows in the project database (and the reward curve reached the plot), and one environment of
    each family (classic control, Box2D, MuJoCo, Atari) can be made, stepped and rendered.
    ``module_started``: ``time.monotonic()`` when ``app.__main__`` began (its ``window_seconds``).
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
    window_seconds = round(time.monotonic() - module_started, 2)
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
    window.runs_page.select_run(run_ids["reward_model"])  # the plots show the selected run (the latest by default)
    window.runs_page.plot.redraw()

    project = window.project

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
    n_traj = sum(1 for item in project.run_items(rid, "trajectory") if item["env_id"] == "CartPole-v1")
    checks["rollouts"] = {"run_id": rid, "status": status_of(rid)[0], "seconds": seconds_of(rid),
                          "trajectories": n_traj,
                          "ok": status_of(rid)[0] == "completed" and n_traj == SMOKE_ROLLOUT_TRAJECTORIES}
    rid = run_ids["reward_model"]
    key = "reward_model/m0_loss"
    from rlhf_core.rewards.training import FitSettings

    every = FitSettings().eval_every  # the trainer logs its metrics every eval_every steps and at the end
    want_rows = sum(1 for s in range(SMOKE_REWARD["steps"]) if (s + 1) % every == 0 or s == SMOKE_REWARD["steps"] - 1)
    n_loss = len(project.metrics(rid).get(key, ([], []))[0])
    n_ckpt = sum(1 for c in project.checkpoints(rid) if c["kind"] == kinds.REWARD_ENSEMBLE)
    _, plotted = window.runs_page.plot.plotted_data(rid, key)
    checks["reward_model"] = {"run_id": rid, "status": status_of(rid)[0], "seconds": seconds_of(rid),
                              "metric_rows_in_db": n_loss, "points_in_plot": int(len(plotted)),
                              "checkpoints": n_ckpt,
                              "ok": status_of(rid)[0] == "completed" and n_loss == want_rows
                              and len(plotted) == want_rows and n_ckpt == 1}
    rid = run_ids["generate"]
    responses = project.run_items(rid, "response")
    outcome = window.runner.outcome(rid)
    result = outcome.result if outcome is not None and isinstance(outcome.result, dict) else {}
    gen = {"run_id": rid, "status": status_of(rid)[0], "seconds": seconds_of(rid),
           "model": "bundled" if use_bundled else str(args.smoke_model), "responses": len(responses),
           "new_tokens": sum(int(r["length"] or 0) for r in responses), "load_seconds": result.get("load_seconds"),
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

