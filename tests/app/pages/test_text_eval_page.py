"""The Text RL page's evaluations: the "Evaluate…" dialog prefilled from the selected run, a real text_eval
run started from it through the window, and the read-only table of finished evaluations."""

from __future__ import annotations

import shutil

from tests.app.conftest import wait_finished


def _policy_run(project, tiny_model):
    run_id = project.create_run("grpo", {}, status="running")
    folder = project.run_folder(run_id) / "policy"
    shutil.copytree(tiny_model, folder)
    project.add_checkpoint(run_id, "text_policy", folder, step=1)
    project.finish_run(run_id, "completed", result={})
    return run_id


def _reward_run(project, tiny_model):
    from rlhf_core.text.reward_model import load_base_reward_model, save_text_reward_model

    run_id = project.create_run("text_reward_model", {}, status="running")
    model, _, _ = load_base_reward_model(str(tiny_model), max_length=128, seed=0)
    folder = save_text_reward_model(model, project.run_folder(run_id) / "text_reward_model")
    project.add_checkpoint(run_id, "text_reward_model", folder, step=1)
    project.finish_run(run_id, "completed", result={})
    return run_id


def test_evaluate_button_runs_text_eval_and_the_table_shows_it(qtbot, window, tiny_model):
    project = window.project
    policy_run = _policy_run(project, tiny_model)
    reward_run = _reward_run(project, tiny_model)
    # an older evaluation that failed is not listed; one with an HTML-looking policy name stays plain text
    failed = project.create_run("text_eval", {}, status="running")
    project.finish_run(failed, "failed", error="boom")
    page = window.text_rl_page
    page.set_project(project)
    window.show_page("text_rl")
    assert page.eval_table.rowCount() == 0 and page.tabs.tabText(3) == "Evaluations"
    page.refresh_runs(select=policy_run)
    assert page.current_run == policy_run

    dialog = page.eval_dialog()
    assert dialog.spec.name == "text_eval"
    values = dialog.form.values()
    assert values["policy_run"] == policy_run and values["reward_run"] == reward_run
    for name, value in (("heldout_tasks", 2), ("k", 2), ("max_new_tokens", 4)):
        dialog.form.set_value(name, value)
    dialog.form.set_value("few_shot", False)
    dialog._on_start()  # what the Start button does
    config = dialog.result_config
    assert config.policy_run == policy_run and config.k == 2

    started = []
    window.runner.job_queued.connect(started.append)
    page.start_requested.emit("text_eval", config)  # what an accepted dialog emits
    qtbot.waitUntil(lambda: bool(started), timeout=10_000)
    status, error = wait_finished(qtbot, window, started[0])
    assert status == "completed", error
    result = window.project.get_run(started[0])["result"]
    assert page.eval_table.rowCount() == 1 and page.tabs.tabText(3) == "Evaluations (1)"
    cells = [page.eval_table.item(0, c).text() for c in range(page.eval_table.columnCount())]
    assert cells == [str(started[0]), f"run {policy_run}", "2 tasks (level 1)", f"{result['pass_at_1']:.3f}",
                     f"{result['cons_at_k']:.3f} (k=2)", f"{result['pass_at_k']:.3f}", f"{result['win_rate']:.3f}"]
    # the policy is its own base here (a folder without a record): the win rate is exactly one half
    assert cells[6] == "0.500"


def test_the_table_is_plain_text_and_shows_a_skipped_win_rate(window):
    project = window.project
    run_id = project.create_run("text_eval", {}, status="running")
    project.finish_run(run_id, "completed", result={
        "policy": "<b>folder</b>", "pass_at_1": 0.25, "cons_at_k": 0.5, "pass_at_k": 0.75, "k": 8,
        "win_rate": None, "win_rate_skipped": "No reward model given"})
    page = window.text_rl_page
    page.set_project(project)
    cells = [page.eval_table.item(0, c).text() for c in range(7)]
    assert cells == [str(run_id), "<b>folder</b>", "–", "0.250", "0.500 (k=8)", "0.750", "–"]
    assert page.eval_table.item(0, 6).toolTip() == "No reward model given"
    # without a policy checkpoint on the selected run, the dialog leaves policy_run at 0
    dialog = page.eval_dialog()
    assert dialog.form.values()["policy_run"] == 0 and dialog.form.values()["reward_run"] == 0


def test_a_run_with_a_held_out_gold_model_is_evaluated_on_its_project_prompts_judged_by_that_model(
        qtbot, window, tiny_model, tmp_path):
    """The dialog of a GRPO run trained on the project's prompts with a held-out gold reward model: prompt
    source "project" and the gold model as the judge; the finished evaluation's row says what it measured."""
    from rlhf_core.text.prompts import import_prompts

    project = window.project
    path = tmp_path / "mine.jsonl"
    path.write_text('{"text": "What is 3 + 4?", "gold_answer": 7}\n{"text": "Capital of France?", "gold_answer": '
                    '"Paris"}\n{"text": "Write a haiku."}\n', encoding="utf-8")
    ids = import_prompts(project, path).prompt_ids
    reward_run = _reward_run(project, tiny_model)
    gold = project.checkpoints(reward_run)[0]["id"]
    policy_run = _policy_run(project, tiny_model)
    project.conn.execute("UPDATE runs SET config_json = ? WHERE id = ?",
                         ['{"prompt_source": "project", "gold_reward_model": "%d"}' % gold, policy_run])
    page = window.text_rl_page
    page.set_project(project)
    window.show_page("text_rl")
    page.refresh_runs(select=policy_run)
    dialog = page.eval_dialog()
    values = dialog.form.values()
    assert values["prompt_source"] == "project" and values["reward_model"] == f"checkpoint:{gold}"
    assert values["reward_run"] == 0 and values["policy_run"] == policy_run
    assert {"prompt_set", "category", "prompt_ids", "max_prompts"} <= set(dialog.form.editors)
    dialog.form.set_value("prompt_ids", ids)
    for name, value in (("k", 2), ("max_new_tokens", 4)):
        dialog.form.set_value(name, value)
    dialog.form.set_value("few_shot", False)
    dialog._on_start()
    config = dialog.result_config
    assert config.prompt_ids == ids and config.reward_model == f"checkpoint:{gold}"
    started = []
    window.runner.job_queued.connect(started.append)
    page.start_requested.emit("text_eval", config)
    qtbot.waitUntil(lambda: bool(started), timeout=10_000)
    status, error = wait_finished(qtbot, window, started[0])
    assert status == "completed", error
    result = window.project.get_run(started[0])["result"]
    assert result["prompts"] == 2 and result["prompts_without_gold"] == 1
    assert result["reward_model"] == str(project.abspath(project.checkpoints(reward_run)[0]["path"]))
    cells = [page.eval_table.item(0, c).text() for c in range(page.eval_table.columnCount())]
    assert cells[:3] == [str(started[0]), f"run {policy_run}", "2 project prompts"]
