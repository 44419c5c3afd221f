"""The Extrapolation page's "Any reward model" tab: pick a reward model made by the ordinary jobs (and one
policy's rollouts); the plotted points are the analysis' own output, scored off the GUI thread."""

from __future__ import annotations

import numpy as np
from PySide6.QtWidgets import QDialog

from app.analysis.reward_check_view import NO_MODEL_TEXT
from rlhf_core.analysis.reward_check import check_reward
from tests.core.analysis.test_reward_check import ENV, make_reward_and_policy


def _points(item):
    x, y = item.getData()
    return (np.asarray([]), np.asarray([])) if x is None else (np.asarray(x), np.asarray(y))


def _wait_for(qtbot, view, policy_id):
    qtbot.waitUntil(lambda: view.result is not None and view.result.policy_id == policy_id and not view.worker.busy,
                    timeout=20_000)


def test_pick_any_reward_model_and_a_policy(qtbot, window):
    made = make_reward_and_policy(window.project)
    window.open_project(window.project.folder)  # re-open: the page reads the new content
    window.show_page("extrapolation")
    page = window.extrapolation_page
    view = page.reward_check
    assert page.tabs.currentWidget() is view  # no demo runs, but a reward model: this tab opens
    assert [view.reward_box.itemData(i) for i in range(view.reward_box.count())] == [made["reward"]]
    assert view.reward_box.currentText().startswith("reward_model run ") and "control reward model" in (
        view.reward_box.currentText())
    assert view.policy_box.count() == 2 and view.policy_box.itemText(0) == f"all of {ENV}"
    assert view.policy_box.itemData(1) == made["policy"] and view.policy_box.itemText(1).endswith("· 3 trajectories")
    _wait_for(qtbot, view, None)

    expected = check_reward(window.project, made["reward"])
    seen = expected.seen
    for item, mask in ((view.seen_points, seen), (view.unseen_points, ~seen)):
        x, y = _points(item)
        np.testing.assert_array_equal(x, expected.true_returns[mask])
        np.testing.assert_allclose(y, expected.predicted[mask], rtol=1e-6)
    assert view.best_line.isVisible() and view.best_line.value() == expected.best_demo_return
    assert view.stats.text() == expected.text() and "Spearman ρ" in view.stats.text()

    view.policy_box.setCurrentIndex(1)  # only the PPO policy's rollouts: all made after the reward model
    _wait_for(qtbot, view, made["policy"])
    x, y = _points(view.unseen_points)
    assert len(_points(view.seen_points)[0]) == 0 and len(x) == 3
    np.testing.assert_array_equal(x, [window.project.get_item(i)["true_return"] for i in made["later"]])
    np.testing.assert_allclose(y, expected.predicted[-3:], rtol=1e-6)
    assert not view.best_line.isVisible() and "no best demonstration" in view.stats.text()


def test_without_a_reward_model_the_tab_points_at_training_one(qtbot, window, monkeypatch):
    from app.training import config_form

    opened = []  # the New Run dialog, recorded and cancelled instead of waiting for a person
    monkeypatch.setattr(config_form.RunDialog, "exec", lambda self: opened.append(self) or QDialog.DialogCode.Rejected)
    window.show_page("extrapolation")
    page = window.extrapolation_page
    page.tabs.setCurrentWidget(page.reward_check)
    view = page.reward_check
    assert view.reward_box.count() == 0 and view.stats.text() == NO_MODEL_TEXT and view.result is None
    with qtbot.waitSignal(page.run_requested) as signal:
        view.train_button.click()
    assert signal.args == ["reward_model"] and [d.spec.name for d in opened] == ["reward_model"]
