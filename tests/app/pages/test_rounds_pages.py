"""The Models and Rounds pages: rounds started from the GUI alone (round 1, then Next round on its policy with
the settings carried over), renaming an artefact in place, and a round that waits for people's labels and is
continued from the Rounds page as the same run."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QTimer

from rlhf_core import kinds
from rlhf_core.rounds import WAITING
from rlhf_core.store import artefacts
from tests.app.conftest import wait_finished
from tests.conftest import needs_model

TINY_CONTROL = dict(track="control", env_id="CartPole-v1", episodes=4, clips_per_trajectory=1, clip_length=500,
                    queue_pairs=6, previous_pairs=4, reward_steps=30, members=1, ppo_steps=1000, eval_episodes=2,
                    heldout_fraction=0.25)
TINY_TEXT = dict(prompt_set="starter", max_prompts=2, samples_per_prompt=3, max_new_tokens=4, policy_steps=2,
                 reward_epochs=1, batch_size=2, max_length=64, heldout_fraction=0.25)


def _answer_round_dialog(window, values: dict, seen: dict) -> None:
    """When the round dialog opens: note what its form shows, set ``values``, press Start."""
    def fill():
        dialog = window.round_dialog
        try:
            seen.update(dialog.form.values())
            for name, value in values.items():
                dialog.form.set_value(name, value)
            dialog.start_button.click()
        finally:
            if dialog.isVisible():  # a bad value: the test fails below instead of hanging here
                seen["errors"] = dialog.errors.text()
                dialog.reject()

    QTimer.singleShot(0, fill)


def _round_from_gui(qtbot, window, click, values: dict) -> tuple[int, dict]:
    seen: dict = {}
    runs_before = {r["id"] for r in window.project.runs("round")}
    _answer_round_dialog(window, values, seen)
    click()
    assert "errors" not in seen, seen.get("errors")
    new = [r["id"] for r in window.project.runs("round") if r["id"] not in runs_before]
    assert len(new) == 1
    status, error = wait_finished(qtbot, window, new[0], timeout=240_000)
    assert status == "completed", error
    return new[0], seen


@pytest.mark.timeout(400)
def test_two_control_rounds_from_the_gui_and_the_rounds_view(qtbot, window):
    page = window.rounds_page
    window.show_page("rounds")
    assert page.empty.isVisible() and not page.next_button.isEnabled()
    first, _ = _round_from_gui(qtbot, window, page.start_button.click, TINY_CONTROL)
    assert page.rows[-1]["run_id"] == first and page.table.rowCount() == 1
    assert page.table.item(0, 2).text() == "completed" and page.next_button.isEnabled()
    made = window.project.get_run(first)["result"]["policy"]
    assert made.startswith("checkpoint:")

    # Next round on the round's policy: the dialog opens from that policy with round 1's settings
    second, seen = _round_from_gui(qtbot, window, page.next_button.click, {"seed": 1})
    assert seen["from_policy"] == made and seen["track"] == "control"
    assert (seen["ppo_steps"], seen["queue_pairs"], seen["reward_steps"]) == (1000, 6, 30)
    assert [r["run_id"] for r in page.rows] == [first, second]
    row = page.rows[-1]
    assert (row["round"], row["chain"], row["from_policy"]) == (2, first, made)
    result = window.project.get_run(second)["result"]
    assert row["win_by_reward_model"] == result["win_rate_vs_previous"]["by_reward_model"]
    assert page.table.item(1, 0).text() == "2"
    assert page.table.item(1, 9).text().startswith("RM ") and f"n={row['win_n']}" in page.table.item(1, 9).text()
    assert page.table.item(1, 5).text() == f"+{result['labels_added']} / {result['labels_total']}"
    # the plots follow the chain: two rounds of true returns, the win rate from round 2 on
    xs, ys = page.policy_curve.getData()
    assert list(xs) == [1, 2] and list(ys) == pytest.approx(
        [window.project.get_run(first)["result"]["policy_reward"], result["policy_reward"]])
    assert list(page.win_rm_curve.getData()[0]) == [2]


def test_models_page_renames_in_place_and_starts_a_round_from_a_policy(qtbot, window):
    project = window.project
    run = project.create_run("ppo_learned", {"env_id": "CartPole-v1"})
    policy = window.project.folder / "policy.zip"
    policy.write_bytes(b"not read here")
    checkpoint = project.add_checkpoint(run, kinds.SB3_PPO, policy, step=100, meta={"env_id": "CartPole-v1"})
    other = project.add_checkpoint(run, kinds.REWARD_ENSEMBLE, policy, meta={"env_id": "CartPole-v1"})
    page = window.models_page
    window.show_page("models")
    assert page.table.rowCount() == 2 and not page.round_button.isEnabled()
    assert page.select(checkpoint) and page.round_button.isEnabled()

    page.table.item(page.table.currentRow(), 0).setText("balancer v1")  # as typed in the cell
    assert artefacts.find_by_name(project, "balancer v1").id == checkpoint
    assert page.message.text() == "Renamed to “balancer v1”."
    assert page.select(other)
    page.table.item(page.table.currentRow(), 0).setText("Balancer V1")  # taken (case-insensitively): refused
    assert "Another artefact is called 'balancer v1'" in page.message.text()
    assert next(a for a in artefacts.list_artefacts(project) if a.id == other).name != "Balancer V1"
    assert page.table.item(page.table.currentRow(), 0).text() == next(
        a.name for a in artefacts.list_artefacts(project) if a.id == other)  # the cell shows the stored name
    page.search.setText("balancer")
    assert page.table.rowCount() == 1

    seen: dict = {}

    def cancel():
        form = window.round_dialog.form
        seen.update(form.values())
        seen["shown"] = {name: form.is_shown(name) for name in ("model", "env_id", "seed")}
        form.set_value("track", "text")  # switching the track shows the other track's settings
        seen["shown_text"] = {name: form.is_shown(name) for name in ("model", "env_id")}
        window.round_dialog.reject()

    QTimer.singleShot(0, cancel)
    assert page.select(checkpoint)
    page.round_button.click()
    assert (seen["from_policy"], seen["track"]) == (f"checkpoint:{checkpoint}", "control")
    assert seen["shown"] == {"model": False, "env_id": True, "seed": True}  # a control round: no text settings
    assert seen["shown_text"] == {"model": True, "env_id": False}
    seen.clear()
    QTimer.singleShot(0, cancel)
    window.next_round_from_view()  # Run ▸ Next Round (Ctrl+Shift+N) on the Models page: its selected policy
    assert seen["from_policy"] == f"checkpoint:{checkpoint}"


@needs_model
@pytest.mark.timeout(300)
def test_a_round_waiting_for_people_is_labelled_and_continued_from_the_rounds_page(qtbot, window, tiny_model):
    page = window.rounds_page
    first, _ = _round_from_gui(qtbot, window, page.start_button.click,
                               {**TINY_TEXT, "model": str(tiny_model), "labeller": "human"})
    row = page.rows[-1]
    assert (row["status"], row["waiting_pairs"]) == (WAITING, 6)
    assert page.table.item(0, 2).text() == "waiting for 6 labels"
    assert not page.continue_button.isEnabled() and "still waits for 6 of its 6 pairs" in page.continue_button.toolTip()
    assert page.label_button.isEnabled() and not page.next_button.isEnabled()
    page.label_button.click()
    assert window.stack.currentWidget() is window.text_page

    project = window.project
    for q in project.pending_pairs(limit=100):
        if q["run_id"] == first:
            project.add_comparison(q["left_id"], q["right_id"], "left", source="human", queue_id=q["id"])
    window.show_page("rounds")  # showing the page reloads it
    assert page.table.item(0, 2).text() == "labelled: continue it" and page.continue_button.isEnabled()
    page.continue_button.click()
    status, error = wait_finished(qtbot, window, first, timeout=240_000)
    assert status == "completed", error
    row = page.rows[-1]
    assert (row["run_id"], row["status"], row["labels_added"]) == (first, "completed", 6)
    assert row["policy"] and page.next_button.isEnabled() and len(page.rows) == 1
