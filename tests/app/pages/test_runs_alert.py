"""The Runs page says "Reward hacking?" for a run that trained a policy on a learned reward when its learned
return rose while its true return fell beyond the noise margin; not for noise within it, nor for other jobs."""

from __future__ import annotations

import numpy as np


def _stored_run(project, kind: str, learned, true) -> int:
    run_id = project.create_run(kind, {"env_id": "CartPole-v1"}, status="running")
    project.log_metric_rows(run_id, [(256 * i, {"rollout/learned_return": float(a), "rollout/true_return": float(b)},
                                      None) for i, (a, b) in enumerate(zip(learned, true))])
    project.finish_run(run_id, "completed", result={})
    return run_id


def test_runs_page_shows_the_control_hacking_alert(window):
    project = window.project
    learned = [10, 12, 15, 19, 24, 30, 37, 45]
    hacked = _stored_run(project, "ppo_learned", learned, [20, 60, 120, 180, 200, 150, 90, 40])
    quiet = _stored_run(project, "preference_rl", learned, list(200 + np.random.default_rng(0).uniform(-1.5, 1.5, 8)))
    other = _stored_run(project, "rollouts", learned, [20, 60, 120, 180, 200, 150, 90, 40])
    page = window.runs_page
    window.show_page("runs")
    page.refresh()
    page.select_run(hacked)
    assert page.alert_label.isVisible()
    assert page.alert_label.text().startswith(f"Run {hacked}: Reward hacking? the learned return rose by ")
    assert "the true return fell from 200.000 to 40.000" in page.alert_label.text()
    for run_id in (quiet, other):
        page.select_run(run_id)
        assert not page.alert_label.isVisible() and page.alert_label.text() == ""
    page.select_run(hacked)
    assert page.alert_label.isVisible()
