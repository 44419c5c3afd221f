"""The text pages on a real window: generation streaming, the Text RL monitor, the reward model page."""

from __future__ import annotations

import math

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from tests.app.conftest import wait_finished

HTMLISH = "<b>bold</b> & <script>x</script>"


def test_generation_streams_batches_into_the_table_as_plain_text(qtbot, window, tiny_model):
    from rlhf_core.sources.generate import GenerateConfig

    folder = tiny_model
    page = window.generate_page
    window.show_page("generate")
    seen_batches = []
    window.runner.sample_emitted.connect(
        lambda rid, kind, payload, step: kind == "generation" and seen_batches.append(page.table.rowCount()))
    config = GenerateConfig(model=str(folder), prompt_set="lecture", max_prompts=2, samples_per_prompt=2,
                            max_new_tokens=4, batch_size=2, seed=3)
    run_id = window.start_run("generate", config, show_runs=False)
    assert window.stack.currentWidget() is page  # stays on the page
    assert page.run_id == run_id and not page.generate_button.isEnabled()
    status, error = wait_finished(qtbot, window, run_id)
    assert status == "completed", error
    # two batches of two: the table grew batch by batch while the job ran
    assert len(seen_batches) == 2 and page.table.rowCount() == 4
    assert page.generate_button.isEnabled() and "completed: 4 responses" in page.status.text()
    stored = [i for i in window.project.items("response") if i["run_id"] == run_id]
    assert sorted(r["text"] for r in page.rows) == sorted(i["text"] for i in stored)
    page.table.selectRow(1)
    assert page.rows[1]["text"] in page.detail.toPlainText()
    # reopening the project shows the last run's responses again
    page.set_project(window.project)
    assert page.table.rowCount() == 4 and page.run_id == run_id


def test_generation_page_refuses_impossible_settings(window):
    page = window.generate_page
    page.form.editors["prompt_set"].setText("")  # no prompts at all is caught by the job, not here
    page.form.editors["top_p"].setValue(0.0)  # top_p must be > 0
    runs_before = len(window.project.runs())
    page.request_generation()
    assert "Cannot generate" in page.status.text() and len(window.project.runs()) == runs_before


def _fake_rl_run(project, kind="grpo", n=8, hacked=True, config=None, result=None, paired=None):
    """A run with the metric keys and samples a text trainer logs (written through the real store);
    ``paired``: {step: (proxy gain, gold gain[, gold gain's SE])} of the PPO demo's paired checks."""
    run_id = project.create_run(kind, dict(config or {}), status="running")
    for step in range(n):
        if step in (paired or {}):
            project.log_metrics(run_id, step, {"eval/paired_proxy_gain": paired[step][0],
                                               "eval/paired_gold_gain": paired[step][1],
                                               **({"eval/paired_gold_gain_se": paired[step][2]}
                                                  if len(paired[step]) > 2 else {})})
        if paired and step in (1, 2, 4):  # and a best-of-n curve, logged at step n
            project.log_metrics(run_id, step, {"bon/proxy": 0.5 * step, "bon/gold": 0.2 * (step == 2),
                                               "bon/kl": math.log(step) - (step - 1) / step})
        values = {"reward/mean": 0.5 * step, "kl/token_mean": 0.01 * step, "kl/seq_mean": float(step * step),
                  "length/mean": 40.0 + step,  # the old name of completions/mean_length: it reads as the new one
                  "train/loss": 1.0 / (step + 1),
                  "gold/reward": (0.3 * step if step < 4 else 1.2 - 0.4 * (step - 3)) if hacked else 0.1 * step}
        project.log_metrics(run_id, step, values)
        project.add_sample(run_id, "text_rl", {"step": step, "prompt": "What is 2+3?", "response": HTMLISH + str(step),
                                               "reward": 0.5 * step, "components": {"format": 0.5, "correctness": 0.0},
                                               "length": 40 + step}, step=step)
    project.finish_run(run_id, "completed", result={"reward_last": 3.5, **(result or {})})
    return run_id


def test_text_rl_page_shows_samples_alerts_and_the_overoptimisation_curve(window):
    project = window.project
    run_id = _fake_rl_run(project)
    page = window.text_rl_page
    page.set_project(project)
    window.show_page("text_rl")
    assert page.current_run == run_id and page.checked_runs() == [run_id]
    assert page.sample_table.rowCount() == 8
    assert page.sample_table.item(7, 4).text() == HTMLISH + "7"  # plain text, not rendered
    page.sample_table.selectRow(7)
    detail = page.sample_detail.toPlainText()
    assert HTMLISH + "7" in detail and "format +0.500" in detail
    assert page.alert_kinds() == ["reward_hacking"]
    assert page.tabs.tabText(1) == "Alerts (1)"
    xs, ys = page.proxy_curve.getData()
    assert list(xs) == [float(s) for s in range(8)] and list(ys) == [0.5 * s for s in range(8)]
    gx, gy = page.gold_curve.getData()
    assert len(gx) == 8 and math.isclose(gy[3], 0.9)
    keys = set(page.plot.store.keys([run_id]))
    assert {"reward/mean", "kl/token_mean", "completions/mean_length", "gold/reward"} <= keys
    assert "length/mean" not in keys
    # a second, healthy run: overlay both, show the new one
    other = _fake_rl_run(project, kind="ppo_text", hacked=False)
    page.refresh_runs(select=other)
    assert page.current_run == other and page.checked_runs() == [run_id, other]
    assert page.alert_kinds() == []


def _points(curve) -> int:
    xs, _ = curve.getData()
    return 0 if xs is None else len(xs)


def _legend_names(plot) -> list[str]:
    return [label.text for _, label in plot.plotItem.legend.items if label.isVisible()]


def _legend_rows_on_screen(plot) -> tuple[float, list[float]]:
    """The legend box's height and the top of each shown row, once Qt has laid the legend out."""
    legend = plot.plotItem.legend
    legend.layout.activate()
    QApplication.processEvents()
    return legend.height(), [label.pos().y() for _, label in legend.items if label.isVisible()]


def test_overoptimisation_view_overlays_ticked_runs_and_states_the_win_rates(window):
    """A beta = 0 demo run read against a beta = 0.3 one: the other ticked run in hollow markers, named by its
    beta; the selected run's held-out win rates (proxy vs gold judge) under the plot."""
    project = window.project
    page = window.text_rl_page
    hacked = _fake_rl_run(project, kind="ppo_demo", config={"beta": 0.0}, paired={4: (0.6, 0.3, 0.1), 7: (1.5, -0.4, 0.12)},
                          result={"win_rate_proxy": 0.625, "win_rate_gold": 0.3125, "eval_prompts": 16,
                                  "reward_window_last": 1.41, "gold_centred_window_last": -0.25, "goodhart_gap": 1.66,
                                  "paired_n": 64, "paired_proxy_gain": 1.2, "paired_gold_gain": -0.1,
                                  "paired_goodhart_gap": 1.3, "paired_goodhart_gap_se": 0.14,
                                  "paired_gold_peak_step": 4, "paired_gold_peak": 0.3, "paired_gold_drop": 0.7,
                                  "paired_gold_drop_se": 0.15, "paired_overoptimised": True})
    kept = _fake_rl_run(project, kind="ppo_demo", hacked=False, config={"beta": 0.3},
                        result={"win_rate_proxy": 0.375, "win_rate_gold": 0.5, "eval_prompts": 16})
    page.set_project(project)
    window.show_page("text_rl")
    assert page.current_run == kept and page.checked_runs() == [kept]  # the latest run, alone
    assert _points(page.other_proxy_curve) == 0 and _points(page.other_gold_curve) == 0
    assert _legend_names(page.over_plot) == ["proxy reward (optimised)", "gold reward (the real goal)"]
    two_rows, two_tops = _legend_rows_on_screen(page.over_plot)
    assert "win rate 0.38 judged by the proxy, 0.50 by the gold reward" in page.over_note.text()
    assert "Goodhart gap" not in page.over_note.text() and "Paired" not in page.over_note.text()  # none here
    page.refresh_runs(select=hacked)  # ticks the new selection as well
    assert page.checked_runs() == [hacked, kept] and page.current_run == hacked
    assert "win rate 0.62 judged by the proxy, 0.31 by the gold reward" in page.over_note.text()
    assert "the proxy says +1.41, the gold reward -0.25; Goodhart gap +1.66." in page.over_note.text()
    assert ("Paired check, 64 responses drawn by the policy and the reference with the same random numbers: proxy "
            "gain +1.20, gold gain -0.10; Goodhart gap +1.30 ± 0.14 (1 SE).") in page.over_note.text()
    proxy_other, gold_other = page.other_proxy_curve, page.other_gold_curve
    assert list(page._finished_over) == [kept]  # a finished run's curve is read from the project once
    xs, ys = proxy_other.getData()  # the beta = 0.3 run: sqrt(KL) = step, proxy = 0.5 * step, gold = 0.1 * step
    assert list(xs) == [float(s) for s in range(8)] and list(ys) == [0.5 * s for s in range(8)]
    assert math.isclose(gold_other.getData()[1][3], 0.3)
    assert math.isclose(page.gold_curve.getData()[1][3], 0.9)  # the selected beta = 0 run, filled markers
    assert _legend_names(page.over_plot) == [
        f"proxy, run {hacked}, β = 0 (selected)", f"gold, run {hacked}, β = 0 (selected)",
        f"proxy, run {kept}, β = 0.3", f"gold, run {kept}, β = 0.3",
        "proxy gain, paired check", "gold gain, paired check", "proxy, best-of-n", "gold, best-of-n"]
    eight_rows, eight_tops = _legend_rows_on_screen(page.over_plot)
    # hidden rows take no room: the shown rows sit one under the other from the top, evenly spaced, and the
    # box grows by one row's height per row shown (before, it kept the height of all 8 rows)
    row = eight_tops[1] - eight_tops[0]
    assert row > 10 and all(math.isclose(b - a, row) for a, b in zip(eight_tops, eight_tops[1:]))
    assert two_tops == eight_tops[:2] and math.isclose(eight_rows - two_rows, 6 * row)
    bx, by = page.bon_gold_curve.getData()
    assert list(by) == [0.0, 0.2, 0.0] and math.isclose(bx[2], math.sqrt(math.log(4) - 0.75))
    assert list(page.bon_proxy_curve.getData()[1]) == [0.5, 1.0, 2.0]
    # its paired checks: from the reference at the origin to sqrt(KL) = step 4 and 7
    assert [list(v) for v in page.paired_proxy_curve.getData()] == [[0.0, 4.0, 7.0], [0.0, 0.6, 1.5]]
    assert [list(v) for v in page.paired_gold_curve.getData()] == [[0.0, 4.0, 7.0], [0.0, 0.3, -0.4]]
    # +-1 SE bars on the two checks (none at the reference, whose gain is exactly 0)
    err = page.paired_gold_err.opts
    assert list(err["x"]) == [4.0, 7.0] and list(err["y"]) == [0.3, -0.4] and list(err["height"]) == [0.2, 0.24]
    assert ("Over-optimised: the paired gold gain peaked at step 4 (+0.30) and then fell 0.70 ± 0.15 while the "
            "proxy kept rising.") in page.over_note.text()
    # unticking the other run removes its markers and the run names from the legend
    for i in range(page.run_list.count()):
        item = page.run_list.item(i)
        if int(item.data(Qt.ItemDataRole.UserRole)) == kept:
            item.setCheckState(Qt.CheckState.Unchecked)
    assert _points(page.other_proxy_curve) == 0 and _points(page.other_gold_curve) == 0
    assert len(page.over_plot.plotItem.legend.items) == 8  # rows relabelled, never re-made
    assert _legend_names(page.over_plot) == ["proxy reward (optimised)", "gold reward (the real goal)",
                                             "proxy gain, paired check", "gold gain, paired check",
                                             "proxy, best-of-n", "gold, best-of-n"]
    six_rows, six_tops = _legend_rows_on_screen(page.over_plot)
    assert six_tops == eight_tops[:6] and math.isclose(eight_rows - six_rows, 2 * row)
    page.refresh_runs(select=kept)  # a run without paired checks: no paired lines, no legend rows for them
    assert _points(page.paired_proxy_curve) == 0 and _points(page.paired_gold_curve) == 0
    assert _points(page.bon_proxy_curve) == 0 and _points(page.bon_gold_curve) == 0
    assert len(page.paired_gold_err.opts["x"]) == 0 and "paired gold" not in page.over_note.text()
    legend = " ".join(_legend_names(page.over_plot))
    assert f"run {kept}, β = 0.3 (selected)" in legend and "paired" not in legend and "best-of-n" not in legend


def test_overoptimisation_note_reads_the_paired_gold_fall_against_its_noise(window):
    """The note under the over-optimisation plot: a fall within 2 SE, a fall of both judges, no fall."""
    project = window.project
    page = window.text_rl_page
    page.set_project(project)

    def note(**result):
        run_id = project.create_run("ppo_demo", {"beta": 0.0}, status="running")
        project.finish_run(run_id, "completed", result={"paired_gold_peak_step": 30, "paired_gold_peak": 0.39,
                                                        **result})
        return page._win_rate_note(run_id)

    assert ("The paired gold gain peaked at step 30 (+0.39); its fall since, 0.19 ± 0.10, is within 2 SE."
            in note(paired_gold_drop=0.19, paired_gold_drop_se=0.1, paired_overoptimised=False))
    both = note(paired_gold_drop=0.5, paired_gold_drop_se=0.1, paired_overoptimised=False)
    assert "fell 0.50 ± 0.10, but the proxy did not keep rising" in both and "Over-optimised" not in both
    assert "still at its highest at the last check" in note(paired_gold_drop=0.0, paired_gold_drop_se=0.0,
                                                             paired_overoptimised=False)
    assert "peaked at the reference (step 0)" in note(paired_gold_peak_step=0, paired_gold_drop=0.55,
                                                      paired_gold_drop_se=0.1, paired_overoptimised=True)


def test_text_rl_page_follows_a_live_run(window):
    project = window.project
    page = window.text_rl_page
    run_id = project.create_run("grpo", {}, status="running")
    page.on_job_queued(run_id, "grpo")
    assert page.current_run == run_id
    page.on_metrics(run_id, [(0, {"kl/token_mean": 0.0, "completions/mean_length": 40.0, "reward/mean": 0.1}),
                             (1, {"kl/token_mean": -0.2, "completions/mean_length": 41.0, "reward/mean": 0.2})])
    page.on_sample(run_id, "text_rl", {"step": 1, "prompt": "p", "response": "r", "reward": 0.2, "length": 41}, 1)
    page._update_analysis()
    assert page.alert_kinds() == ["kl_negative"] and page.sample_table.rowCount() == 1
    page.on_sample(run_id + 99, "text_rl", {"step": 1}, 1)  # other runs are ignored
    assert page.sample_table.rowCount() == 1


def test_trl_export_and_import_from_the_window(window, tmp_path):
    import json

    project = window.project
    pid = project.add_prompt("Name a colour.")
    a = project.add_item("response", prompt_id=pid, text="Blue.", source="generated")
    b = project.add_item("response", prompt_id=pid, text="I like <b>cheese</b>.", source="generated")
    you = project.ensure_labeller("you")
    project.add_comparison(a, b, "left", labeller_id=you, source="human")
    project.add_comparison(a, b, "tie", labeller_id=you, source="human")
    report = window.export_trl(tmp_path / "out.jsonl")
    assert report["written"] == 1 and report["skipped"]["tie"] == 1
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert rows == [{"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "I like <b>cheese</b>."}]
    # a bad file: clear message naming the line, nothing imported
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + '{"prompt": "x", "chosen": "y"}\n')
    before = project.counts()
    assert window.import_trl(bad) is None
    assert "line 2" in window.error_panel.text.toPlainText() and project.counts() == before
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Rome."}) + "\n")
    report = window.import_trl(good)
    assert report["comparisons_added"] == 1 and project.counts()["comparisons"] == before["comparisons"] + 1
