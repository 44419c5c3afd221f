"""The live metric plots: one axis per unit, ensemble members on one step axis under their mean, markers
on short series, colours fixed by key, the wheel left to the page, the selected run plotted by default."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from app.plots.metric_plot import FEW_POINTS, MetricPlotView, member_offsets
from rlhf_core import config as cfg
from rlhf_core.jobs import get_job
from tests.app.conftest import wait_finished


@pytest.fixture
def view(qtbot):
    v = MetricPlotView()
    qtbot.addWidget(v)
    v.resize(700, 500)
    v.show()
    return v


def _series(n: int, start: float = 0.0, step: float = 1.0) -> tuple[list[int], list[float]]:
    return list(range(n)), [start + step * i for i in range(n)]


def _pen_colour(curve) -> str:
    return curve.opts["pen"].color().name()


def _y_range(view: MetricPlotView, title: str) -> tuple[float, float]:
    QApplication.processEvents()  # pyqtgraph fits the axes when it next lays out
    return tuple(view.plot_item(title).viewRange()[1])


def test_each_unit_gets_its_own_axis_and_returns_one_per_environment(view):
    view.load_run(1, {"rollout/true_return": _series(10, -1500, 50), "rollout/episode_length": _series(10, 200, 0),
                      "rollout/epsilon": _series(10, 0, 0.1), "kl/beta": _series(10, 0.05, 0),
                      "kl/token_mean": _series(10, 0, 0.001), "reward_model/mean_length": _series(10, 120, 1),
                      "reward_model/loss": _series(10, 0.7, -0.03)}, env="Pendulum-v1")
    view.load_run(2, {"rollout/true_return": _series(10, 10, 40)}, env="CartPole-v1")
    view.set_visible_runs([1, 2])
    view.redraw()
    assert view.plot_of(1, "rollout/true_return") == "rollout · return · Pendulum-v1"
    assert view.plot_of(2, "rollout/true_return") == "rollout · return · CartPole-v1"
    assert view.plot_of(1, "rollout/episode_length") == "rollout · steps"
    assert view.plot_of(1, "rollout/epsilon") == "rollout · probability"
    assert view.plot_of(1, "kl/beta") == "kl · coefficient" != view.plot_of(1, "kl/token_mean") == "kl · KL/token"
    assert view.plot_of(1, "reward_model/mean_length") == "reward_model · tokens"
    assert view.plot_of(1, "reward_model/loss") == "reward_model · nats"
    assert view.plot_groups() == ["kl", "reward_model", "rollout"]
    # each axis spans its own data: the epsilon axis is not stretched to the returns', CartPole's not to Pendulum's
    low, high = _y_range(view, "rollout · probability")
    assert -0.5 < low < 0.05 and 0.85 < high < 1.5
    low, high = _y_range(view, "rollout · return · CartPole-v1")
    assert -60 < low < 10 and 360 < high < 450  # not down to Pendulum's -1,500
    assert view.plot_item("rollout · steps").getAxis("left").labelText == "steps"
    # one step axis per namespace: the rollout plots are linked
    steps_vb = view.plot_item("rollout · steps").getViewBox()
    assert steps_vb.linkedView(0) is view.plot_item("rollout · return · CartPole-v1").getViewBox()


def test_a_series_of_few_points_has_markers_and_a_long_one_none(view):
    view.load_run(1, {"reward_model/length_correlation": ([40], [0.4]), "reward_model/loss": _series(50)})
    view.set_visible_runs([1])
    view.redraw()
    single = view.curve(1, "reward_model/length_correlation")
    assert single.opts["symbol"] == "o" and view.plotted_data(1, "reward_model/length_correlation")[1].tolist() == [0.4]
    assert view.curve(1, "reward_model/loss").opts["symbol"] is None
    # a live series: markers while short, none once it has a line
    view.append(2, [(0, {"time/steps_per_second": 3.0})])
    view.set_visible_runs([1, 2])
    view.redraw()
    assert view.curve(2, "time/steps_per_second").opts["symbol"] == "o"
    view.append(2, [(s, {"time/steps_per_second": 3.0}) for s in range(1, FEW_POINTS + 5)])
    view.redraw()
    assert view.curve(2, "time/steps_per_second").opts["symbol"] is None


def test_colours_are_fixed_by_key_and_survive_the_end_of_a_run(qtbot, window):
    """Keys arrive live in one order; the finished run reloads from the database in another (sorted):
    every key keeps its colour, and the plots keep their layout (the same curve objects)."""
    page = window.runs_page
    window.show_page("runs")  # hidden plots do not draw
    project = window.project
    run_id = project.create_run("reward_model", {"env_id": "CartPole-v1"}, status="running")
    page.on_job_queued(run_id)
    order = ["reward_model/m1_train_accuracy", "reward_model/m0_loss", "reward_model/m1_loss",
             "reward_model/m0_train_accuracy", "time/steps_per_second"]
    for step in range(30):
        values = {key: 0.5 + 0.01 * step for key in order}
        page.on_metrics(run_id, [(step, values)])
        project.log_metrics(run_id, step, values)
        if step == 0:
            page.plot.redraw()  # the first frame sees the keys in the live order
    page.plot.redraw()
    plot = page.plot
    live = {key: (plot.curve(run_id, key), _pen_colour(plot.curve(run_id, key))) for key in order}
    means = {t: _pen_colour(plot.curve(run_id, t)) for t in ("reward_model/m{k}_loss", "reward_model/m{k}_train_accuracy")}
    titles = plot.plot_titles()
    project.finish_run(run_id, "completed")
    page.on_job_finished(run_id, "completed", "")
    plot.redraw()
    assert plot.plot_titles() == titles == ["reward_model · nats", "reward_model · fraction", "time · steps/s"]
    for key, (curve, colour) in live.items():
        assert plot.curve(run_id, key) is curve and _pen_colour(curve) == colour, key
    assert len(plot.plotted_data(run_id, "reward_model/m0_loss")[0]) == 30  # redrawn from the database
    # and the same colours in a fresh view fed the keys in the opposite order
    other = MetricPlotView()
    qtbot.addWidget(other)
    other.load_run(7, {key: _series(5) for key in reversed(order)})
    other.set_visible_runs([7])
    other.redraw()
    assert {key: _pen_colour(other.curve(7, key)) for key in order} == {k: c for k, (_, c) in live.items()}
    assert {t: _pen_colour(other.curve(7, t)) for t in means} == means
    # a member is a lighter, thinner shade of its metric's colour; the mean is bold
    loss_mean = other.curve(7, "reward_model/m{k}_loss").opts["pen"]
    member = other.curve(7, "reward_model/m0_loss").opts["pen"]
    assert loss_mean.widthF() == 2 and member.widthF() <= 1
    assert member.color().lightness() > loss_mean.color().lightness()
    assert member.color().hue() == loss_mean.color().hue()


def test_reward_model_members_share_one_step_axis_under_their_mean(qtbot, window):
    """A real control reward model with three members: every member is logged over the same steps (the
    trainer used to log member k after member k - 1), drawn thin under the bold ensemble mean."""
    def run(job, **settings):
        spec = get_job(job)
        run_id = window.start_run(job, cfg.from_dict(spec.config_class(), settings))
        status, error = wait_finished(qtbot, window, run_id, timeout=120_000)
        assert status == "completed", error
        return run_id

    run("rollouts", env_id="CartPole-v1", episodes=4, noise_schedule="drex_discrete", max_steps=60,
        clips_per_trajectory=1, clip_length=8, queue_pairs=0, record_video=False)
    run_id = run("reward_model", env_id="CartPole-v1", source="drex", snippet_pairs=60, snippet_min=3, snippet_max=8,
                 members=3, hidden=16, steps=200)
    plot = window.runs_page.plot
    assert window.runs_page.checked_runs() == [run_id]  # the new run alone, not the rollouts before it
    plot.redraw()
    ranges = {(k, metric): tuple(plot.plotted_data(run_id, f"reward_model/m{k}_{metric}")[0][[0, -1]])
              for k in range(3) for metric in ("loss", "heldout_accuracy")}
    stored = window.project.metrics(run_id)
    for k in range(3):
        steps = stored[f"reward_model/m{k}_loss"][0]
        assert steps[0] == 49 and steps[-1] <= 199  # every member from the first evaluation on: one step axis
        assert ranges[(k, "loss")] == (float(steps[0]), float(steps[-1]))
    assert ranges[(0, "loss")] == ranges[(1, "loss")] == ranges[(2, "loss")]
    mean_x, mean_y = plot.plotted_data(run_id, "reward_model/m{k}_loss")
    assert mean_x[0] == 49 and mean_x[-1] == max(r[1] for r in ranges.values())
    first = [stored[f"reward_model/m{k}_loss"][1][0] for k in range(3)]
    assert mean_y[0] == pytest.approx(np.mean(first))
    assert plot.plot_of(run_id, "reward_model/m2_heldout_accuracy") == "reward_model · fraction"
    assert plot.legend_rows("reward_model · nats") == ["loss (ensemble mean)", "loss (members)",
                                                       "heldout_loss (ensemble mean)", "heldout_loss (members)"]


def test_members_stored_one_after_another_are_drawn_on_one_axis(view):
    """Runs stored before the trainer logged members on one axis (member k from step k x steps on)."""
    assert member_offsets([np.array([49.0, 99.0, 149.0]), np.array([249.0, 299.0]), np.array([449.0])]) == [0, 200, 400]
    assert member_offsets([np.array([49.0, 99.0]), np.array([49.0, 99.0, 149.0])]) == [0, 0]
    old = {"reward_model/m0_loss": ([49, 99, 149], [0.6, 0.5, 0.4]),
           "reward_model/m1_loss": ([249, 299, 349, 399], [0.7, 0.6, 0.5, 0.45])}
    view.load_run(3, old)
    view.set_visible_runs([3])
    view.redraw()
    assert view.plotted_data(3, "reward_model/m1_loss")[0].tolist() == [49, 99, 149, 199]
    x, y = view.plotted_data(3, "reward_model/m{k}_loss")
    assert x.tolist() == [49, 99, 149, 199] and y == pytest.approx([0.65, 0.55, 0.45, 0.45])


def _wheel(view: MetricPlotView, modifiers=Qt.KeyboardModifier.NoModifier, delta: int = -120) -> None:
    """One notch of the wheel over the first plot (negative: down; zooms out or scrolls the page down)."""
    item = view.plot_item(view.plot_titles()[0])
    viewport = view.graphics.viewport()
    pos = view.graphics.mapFromScene(item.getViewBox().sceneBoundingRect().center())
    event = QWheelEvent(QPointF(pos), QPointF(viewport.mapToGlobal(pos)), QPoint(0, 0), QPoint(0, delta),
                        Qt.MouseButton.NoButton, modifiers, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(viewport, event)


def test_the_wheel_scrolls_the_page_and_zooms_only_with_ctrl_or_after_a_click(qtbot, view):
    view.resize(600, 300)  # three plots: taller than the view, so there is a page to scroll
    view.load_run(1, {"rollout/true_return": _series(50), "rollout/episode_length": _series(50, 200, 0),
                      "rollout/epsilon": _series(50, 0, 0.02)})
    view.set_visible_runs([1])
    view.redraw()
    QApplication.processEvents()
    item = view.plot_item("rollout · return")
    bar = view._scroll.verticalScrollBar()
    before = item.viewRange()
    assert bar.maximum() > 0 and bar.value() == 0
    _wheel(view)
    assert item.viewRange() == before and bar.value() > 0  # the page scrolled, the plot did not zoom
    assert view._auto_x.get("rollout", True)  # still following the data
    bar.setValue(0)
    QApplication.processEvents()
    _wheel(view, Qt.KeyboardModifier.ControlModifier, delta=120)
    zoomed = item.viewRange()
    assert zoomed[0][1] - zoomed[0][0] < before[0][1] - before[0][0] and bar.value() == 0
    assert view._auto_x["rollout"] is False  # zoomed by hand: the x axis no longer follows the data
    # a click in the plots arms the plain wheel until the pointer leaves them
    qtbot.mouseClick(view.graphics.viewport(), Qt.MouseButton.LeftButton,
                     pos=view.graphics.mapFromScene(item.getViewBox().sceneBoundingRect().center()))
    _wheel(view, delta=120)
    assert item.viewRange()[0][1] - item.viewRange()[0][0] < zoomed[0][1] - zoomed[0][0]
    QApplication.sendEvent(view.graphics, QEvent(QEvent.Type.Leave))
    again = item.viewRange()
    _wheel(view, delta=120)
    assert item.viewRange() == again


def _grpo_like_run(project, keys_in_order: list[str], n: int = 5) -> int:
    run_id = project.create_run("grpo", {}, status="running")
    for step in range(n):
        project.log_metrics(run_id, step, {key: float(step) for key in keys_in_order})
    project.finish_run(run_id, "completed")
    return run_id


def test_text_rl_plots_reward_kl_and_length_first(window):
    page = window.text_rl_page
    keys = ["gold/accuracy", "completions/mean_length", "completions/stopped_fraction", "kl/beta", "kl/token_mean",
            "kl/seq_mean", "length/max", "train/loss", "reward/mean", "reward/format"]
    older = _grpo_like_run(window.project, keys)
    finished = _grpo_like_run(window.project, keys)
    page.set_project(window.project)
    window.show_page("text_rl")
    assert page.checked_runs() == [finished]  # the latest run alone, not every run of the project
    page.plot.redraw()
    titles = page.plot.plot_titles()
    assert titles[:3] == ["reward", "kl · KL/token", "completions · tokens"]
    assert titles[3:] == ["gold · fraction", "kl · KL/sequence", "kl · coefficient", "completions · fraction",
                          "train · loss"]
    # live, the keys arriving in the worst order (gold, completions, kl, length, reward): the same order
    page.run_list.item(1).setCheckState(Qt.CheckState.Checked)  # the user overlays the older run
    assert page.checked_runs() == [older, finished]
    run_id = window.project.create_run("grpo", {}, status="running")
    page.on_job_queued(run_id, "grpo")
    assert page.checked_runs() == [older, run_id]  # the new run replaces the one shown by default, not the user's
    for key in keys:
        page.on_metrics(run_id, [(0, {key: 1.0})])
        page.plot.redraw()
    assert page.plot.plot_titles()[:3] == ["reward", "kl · KL/token", "completions · tokens"]
    assert page.plot.visible_runs == [older, run_id]


def test_the_runs_page_plots_the_selected_or_latest_run_and_more_by_choice(qtbot, window):
    page = window.runs_page
    project = window.project
    ids = []
    for i in range(3):
        run_id = project.create_run("synthetic_preferences", {}, status="running")
        project.log_metrics(run_id, 0, {"reward_model/loss": 0.5 + i})
        project.finish_run(run_id, "completed")
        ids.append(run_id)
    page.set_project(project)
    assert page.checked_runs() == [ids[2]] and page.plot.visible_runs == [ids[2]]  # the latest alone
    page.select_run(ids[0])  # selecting a run plots it in place of the latest
    assert page.checked_runs() == [ids[0]] and page.plot.visible_runs == [ids[0]]
    _tick(page, ids[1])  # the user ticks one more: overlaid
    assert page.checked_runs() == [ids[0], ids[1]]
    new = project.create_run("synthetic_preferences", {}, status="queued")
    page.on_job_queued(new)  # a new run replaces the selected one; the user's tick stays
    assert page.checked_runs() == [ids[1], new] and page.selected_run_id() == new
    # a click on the check box of an unticked row ticks it (selecting the row on the press must not
    # tick it first, or the release would untick it again)
    rect = page.table.visualItemRect(page.table.item(_row(page, ids[2]), 0))
    qtbot.mouseClick(page.table.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(rect.left() + 10, rect.center().y()))
    QApplication.processEvents()
    assert page.checked_runs() == [ids[1], ids[2], new]
    # a click elsewhere in a row selects and plots that run, in place of the run ticked for the last selection
    rect = page.table.visualItemRect(page.table.item(_row(page, ids[0]), 1))
    qtbot.mouseClick(page.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.waitUntil(lambda: ids[0] in page.checked_runs(), timeout=2000)
    assert page.checked_runs() == [ids[0], ids[1], ids[2]] and page.selected_run_id() == ids[0]
    assert page.plot.visible_runs == [ids[0], ids[1], ids[2]]


def _row(page, run_id: int) -> int:
    return next(r for r in range(page.table.rowCount()) if page.table.item(r, 0).data(Qt.ItemDataRole.UserRole) == run_id)


def _tick(page, run_id: int) -> None:
    for row in range(page.table.rowCount()):
        item = page.table.item(row, 0)
        if item.data(Qt.ItemDataRole.UserRole) == run_id:
            item.setCheckState(Qt.CheckState.Checked)  # as a click on the box does: itemChanged
