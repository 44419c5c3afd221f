"""The Extrapolation page's runs tab: results per method (— for numbers older runs lack), the D-REX
noise curve with error bars and its Spearman, and the three ranking buttons' configs."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QDialog

from rlhf_core import kinds

EXTRAPOLATION = {"true_demo": [-900.0, -800.0, -712.0], "pred_demo": [1.0, 2.0, 3.0],
                 "true_unseen": [-600.0, -150.0], "pred_unseen": [4.0, 6.0],
                 "report": {"unseen_pearson": 0.99, "unseen_spearman": 1.0, "demo_pearson": 0.98,
                            "unseen_beyond_best_demo": 2, "n_unseen": 2}}
CURVE = [{"epsilon": 0.02, "mean_return": -950.0, "std_return": 40.0, "n": 10},
         {"epsilon": 0.5, "mean_return": -1100.0, "std_return": 80.0, "n": 10},
         {"epsilon": 1.0, "mean_return": -1300.0, "std_return": 60.0, "n": 10}]


def trex(policy, ranking=None, **extra):
    res = {"env_id": "Pendulum-v1", "method": "trex", "best_demo_return": -712.0, "mean_demo_return": -900.0,
           "policy_return": policy, "policy_return_std": 10.0, "reward_correlation": 0.99, "n_demos": 3,
           "beats_best_demo": policy > -712.0, **extra}
    if ranking:
        res["ranking"] = ranking
    return res


def drex(policy, bc, new=True):
    res = {"env_id": "Pendulum-v1", "method": "drex", "best_demo_return": -880.0, "mean_demo_return": -910.0,
           "policy_return": policy, "policy_return_std": 20.0, "reward_correlation": 0.9, "bc_return": bc,
           "n_demos": 5, "beats_best_demo": policy > -880.0}
    if new:
        res.update(demonstrator_mean_return=-905.0, noise_curve=CURVE, noise_curve_spearman=-1.0)
    return res


def add_run(project, result, noise_sample=None) -> int:
    run = project.create_run("extrapolation_demo", {})
    project.start_run(run)
    project.add_sample(run, kinds.SAMPLE_EXTRAPOLATION, EXTRAPOLATION)
    if noise_sample is not None:
        project.add_sample(run, kinds.SAMPLE_NOISE_CURVE, noise_sample)
    project.finish_run(run, "completed", result=result)
    return run


@pytest.fixture
def page(window):
    project = window.project
    ids = {
        "old_trex": add_run(project, trex(-300.0)),
        "trex_a": add_run(project, trex(-150.0, "true_return")),
        "trex_b": add_run(project, trex(-170.0, "true_return")),
        "ckpt": add_run(project, trex(-400.0, "checkpoint")),
        "old_drex": add_run(project, drex(-500.0, -1000.0, new=False),
                            {"epsilon": [0.02, 0.5, 1.0], "mean_true_return": [-900.0, -1200.0, -1250.0]}),
        "drex": add_run(project, drex(-700.0, -1100.0)),
    }
    window.open_project(project.folder)
    window.show_page("extrapolation")
    view = window.extrapolation_page
    return window, view, ids


def row_of(table, first_col_text, col=0):
    rows = [[table.item(r, c).text() for c in range(table.columnCount())] for r in range(table.rowCount())]
    return next(r for r in rows if r[col] == first_col_text)


def test_results_per_method_with_dashes_for_older_runs(page):
    _, view, ids = page
    results = [[view.results.item(r, c).text() for c in range(view.results.columnCount())]
               for r in range(view.results.rowCount())]
    assert [r[1] for r in results] == ["T-REX · true return", "T-REX · checkpoint", "T-REX · —", "D-REX · noise"]
    assert all(r[0] == "Pendulum-v1" for r in results)
    # mean ± std over the runs of a method: policy -150 and -170
    assert results[0][2:] == ["2", "-900.0 ± 0.0", "-712.0 ± 0.0", "—", "-160.0 ± 10.0"]
    assert results[1][2:] == ["1", "-900.0", "-712.0", "—", "-400.0"]
    # D-REX: the new run's demonstrator mean, the old one's demo mean; BC of both
    assert results[3][2:] == ["2", "-907.5 ± 2.5", "-880.0 ± 0.0", "-1050.0 ± 50.0", "-600.0 ± 100.0"]
    # the runs: ranking and noise ρ of runs that stored them, "—" for older ones
    table = view.table
    assert table.rowCount() == 6
    assert row_of(table, str(ids["old_trex"]))[2] == "T-REX · —"
    assert row_of(table, str(ids["old_trex"]))[5] == "—"  # no BC for T-REX
    assert row_of(table, str(ids["old_drex"]))[8] == "—" and row_of(table, str(ids["drex"]))[8] == "-1.00"
    assert row_of(table, str(ids["drex"]))[4:7] == ["-905.0", "-1100.0", "-700.0 ± 20.0"]
    assert row_of(table, str(ids["ckpt"]))[2] == "T-REX · checkpoint"


def select(view, run_id):
    row = next(r for r in range(view.table.rowCount()) if view.table.item(r, 0).text() == str(run_id))
    view.table.selectRow(row)


def test_noise_curve_from_the_result_with_error_bars_and_spearman(page):
    _, view, ids = page
    select(view, ids["drex"])
    assert view.noise_plot.isVisible()
    (curve,) = view.noise_plot.listDataItems()
    assert curve.xData.tolist() == [0.02, 0.5, 1.0] and curve.yData.tolist() == [-950.0, -1100.0, -1300.0]
    assert view.noise_errors is not None and view.noise_errors.opts["top"].tolist() == [40.0, 80.0, 60.0]
    assert "Spearman ρ = -1.00" in view.noise_plot.titleLabel.text
    # an older run: its sample's means, no error bars, the Spearman of those means
    select(view, ids["old_drex"])
    (curve,) = view.noise_plot.listDataItems()
    assert curve.yData.tolist() == [-900.0, -1200.0, -1250.0] and view.noise_errors is None
    assert "Spearman ρ = -1.00" in view.noise_plot.titleLabel.text
    select(view, ids["trex_a"])
    assert not view.noise_plot.isVisible() and not view.noise_plot.listDataItems()


def test_the_three_ranking_buttons_start_the_demo_with_their_configs(page, monkeypatch):
    from app.training import config_form

    window, view, _ = page
    monkeypatch.setattr(config_form.RunDialog, "exec",
                        lambda self: QDialog.DialogCode.Accepted if self._on_start() is None and self.result()
                        else QDialog.DialogCode.Rejected)
    submitted = []
    monkeypatch.setattr(window.runner, "submit",
                        lambda project, job, config, **kw: submitted.append((job, config)) or 99)
    for button in view.ranking_buttons.values():
        button.click()
    assert [job for job, _ in submitted] == ["extrapolation_demo"] * 3
    configs = [config for _, config in submitted]
    assert [(c.method, c.ranking) for c in configs[:2]] == [("trex", "true_return"), ("trex", "checkpoint")]
    assert configs[2].method == "drex"
    assert all(c.env_id == "Pendulum-v1" and c.seed == 0 for c in configs)  # the rest at the job's defaults
    assert set(view.ranking_buttons) == {"true_return", "checkpoint", "noise"}
