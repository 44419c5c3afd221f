"""Review of AI labels in the "Label text" page: accept, override, blind review, the agreement lines and
the Constitution dialog. AI labels are written directly (as the ai_labels job writes them; no model)."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt

from rlhf_core.labelers.ai_feedback import project_constitution, resolve_constitution
from tests.app.conftest import wait_saved

PRINCIPLE = "Which response is <b>less</b> harmful?"  # shown as plain text


@pytest.fixture
def ai_window(window):
    project = window.project
    pid = project.add_prompt("Name a primary colour.")
    ids = [project.add_item("response", prompt_id=pid, text=t, model_id="tiny")
           for t in ("Red.", "Purple, I think.", "Blue is one of them.", "Green.")]
    ai = project.ensure_labeller("ai:judge:SmolLM2-135M-Instruct", "ai")
    labels = []
    for (a, b), outcome, p in (((ids[0], ids[1]), "left", 0.73), ((ids[1], ids[2]), "right", 0.2),
                               ((ids[0], ids[3]), "left", 0.61)):
        qid = project.enqueue_pair(a, b)
        labels.append(project.add_comparison(a, b, outcome, labeller_id=ai, source="ai", principle=PRINCIPLE,
                                             queue_id=qid, meta={"p_left": p, "p_left_ab": p + 0.1,
                                                                 "p_left_ba": p - 0.1}))
    page = window.text_page
    page.set_project(project)
    window.show_page("text")
    return window, ids, labels


def test_review_accept_override_and_enter(qtbot, ai_window):
    window, ids, labels = ai_window
    project = window.project
    view = window.text_page.pairs
    assert view.current is None  # the queue is answered by the AI: nothing for people to label
    assert "AI vs people: no overlap yet" == view.ai_agreement_label.text()
    assert view.queue_button.isEnabled() and view.per_prompt_box.isEnabled()
    view.review_box.setChecked(True)
    assert view.reviewing and view.current["id"] == labels[0]
    # queueing pairs belongs to the queue, not to the review: its controls are off and the call does nothing
    assert not view.queue_button.isEnabled() and not view.per_prompt_box.isEnabled()
    assert not view.second_opinion_box.isEnabled() and "Off while reviewing" in view.queue_button.toolTip()
    assert view.queue_pairs() is None
    assert view.progress_label.text() == "Reviewing AI labels · 3 to review · 0 reviewed"
    info = view.ai_info.text()
    assert view.ai_info.isVisible() and view.ai_info.textFormat() == Qt.TextFormat.PlainText
    assert "ai:judge:SmolLM2-135M-Instruct: left better · 73 % sure\nP(left better) = 0.73, the mean of 0.83" in info
    assert f"Principle asked: {PRINCIPLE}" in info
    assert view.left_title.text().endswith("the AI prefers this one")
    assert "AI prefers" not in view.right_title.text()
    assert view.accept_button.isVisible()
    # accept: the same key as the AI's answer
    qtbot.wait(50)
    qtbot.keyClick(view, Qt.Key.Key_Left)
    # override: the AI said right, the person says left
    assert view.current["id"] == labels[1] and "27 % sure" not in view.ai_info.text()
    assert "right better · 80 % sure" in view.ai_info.text()
    qtbot.keyClick(view.left_text, Qt.Key.Key_1)  # keys typed in a response box work too
    # Enter accepts the third
    assert view.current["id"] == labels[2]
    qtbot.keyClick(view, Qt.Key.Key_Return)
    assert view.current is None and "No AI labels are waiting for review" in view.empty_label.text()
    wait_saved(qtbot)
    humans = project.comparisons(source="human")
    assert [(h["left_id"], h["right_id"], h["outcome"]) for h in humans] == [
        (ids[0], ids[1], "left"), (ids[1], ids[2], "left"), (ids[0], ids[3], "left")]
    metas = [json.loads(h["meta_json"]) for h in humans]
    assert [m["reviewed_ai"] for m in metas] == labels
    assert [m["agreed"] for m in metas] == [True, False, True]
    assert all(m["blind"] is False for m in metas) and all(h["response_ms"] >= 0 for h in humans)
    assert {h["labeller_id"] for h in humans} == {project.ensure_labeller("you")}
    # the AI's labels are all still there, unchanged
    assert [(c["id"], c["outcome"], c["deleted_at"]) for c in project.comparisons(source="ai")] == [
        (labels[0], "left", None), (labels[1], "right", None), (labels[2], "left", None)]
    assert view.ai_agreement_label.text() == "AI vs people: 66.7 % on 3 pairs, κ 0.00"
    assert view.progress_label.text() == "Reviewing AI labels · 0 to review · 3 reviewed"
    # Z undoes the last review (the Enter one): that pair is back for review
    qtbot.keyClick(view, Qt.Key.Key_Z)
    assert view.current["id"] == labels[2]
    wait_saved(qtbot)
    assert [h["outcome"] for h in project.comparisons(source="human")] == ["left", "left"]
    # the Agreement tab has the AI-vs-people line (AI: left, right; people: left, left)
    window.text_page.show_tab("agreement")
    summary = window.text_page.agreement.ai_summary.text()
    assert summary.startswith("AI vs people: agreement 50.0 % on 2 pairs, κ 0.00 (1 the same)")
    assert summary.endswith("without seeing the AI's answer: no pairs yet (use Blind review)")
    # back to the queue: the review panel goes away
    view.review_box.setChecked(False)
    assert not view.reviewing and view.ai_info.isHidden() and view.current is None
    assert view.queue_button.isEnabled() and view.second_opinion_box.isEnabled()
    assert view.queue_button.toolTip().startswith("Put pairs")


def test_blind_review_hides_the_answer_until_labelled(qtbot, ai_window):
    window, ids, labels = ai_window
    view = window.text_page.pairs
    view.blind_box.setChecked(True)
    view.review_box.setChecked(True)
    info = view.ai_info.text()
    assert "hidden until you label" in info and "left better" not in info and "73 %" not in info
    assert "AI prefers" not in view.left_title.text() + view.right_title.text()
    assert not view.accept_button.isEnabled()
    qtbot.keyClick(view, Qt.Key.Key_Return)  # no accepting an answer you cannot see
    assert window.project.comparisons(source="human") == []
    qtbot.keyClick(view, Qt.Key.Key_Right)
    wait_saved(qtbot)
    assert view.message.text().startswith("You overrode the AI") and "AI: left better" in view.message.text()
    human = window.project.comparisons(source="human")[0]
    assert json.loads(human["meta_json"])["blind"] is True and human["outcome"] == "right"
    assert window.text_page.pairs.settings.qs.value("labelling/review_ai_blind", type=bool) is True


def test_constitution_dialog_saves_the_project_copy(qtbot, ai_window):
    from app.labeling.constitution_dialog import ConstitutionDialog

    window, _, _ = ai_window
    folder = window.project.folder
    dialog = ConstitutionDialog(folder)
    qtbot.addWidget(dialog)
    assert len(dialog.principles()) == 6 and dialog.count_label.text() == "6 principles"
    dialog.editor.setPlainText("Which response is funnier?\n\n# a comment\nWhich response is shorter?\n")
    assert dialog.count_label.text() == "2 principles"
    dialog.save()
    assert dialog.result() == ConstitutionDialog.DialogCode.Accepted
    assert project_constitution(folder)[0] == ["Which response is funnier?", "Which response is shorter?"]
    assert resolve_constitution("", folder)[1] == folder / "constitution.txt"  # what the next run uses
    # an empty constitution is refused with a message and nothing is written
    again = ConstitutionDialog(folder)
    qtbot.addWidget(again)
    assert again.principles() == ["Which response is funnier?", "Which response is shorter?"]
    again.editor.setPlainText("   \n# nothing\n")
    again.save()
    assert "at least one principle" in again.error.text() and again.result() != ConstitutionDialog.DialogCode.Accepted
    assert project_constitution(folder)[0] == ["Which response is funnier?", "Which response is shorter?"]
