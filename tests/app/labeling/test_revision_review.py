"""The "Review revisions" tab of Label text: a person accepts, edits and rejects the AI's revisions with the
keys, each stores what ``review_revision`` stores, Z undoes, and model text (HTML-looking included) is shown
literally. The revisions are written as the critique_revise job writes them (no model)."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt

from rlhf_core.labelers import critique_revise as cr
from rlhf_core.labelers.text_labels import add_correction
from tests.app.conftest import wait_saved

PRINCIPLE = "Is it <i>kind</i>?"
HTML_REVISION = "<b>x</b>"


@pytest.fixture
def review_window(window):
    project = window.project
    pid = project.add_prompt("Greet me <please>.")
    originals = [project.add_item("response", prompt_id=pid, text=t, model_id="tiny") for t in ("hi", "yo", "hey")]
    ai = project.ensure_labeller("ai:critic:tiny", "ai")
    revisions = []
    for o, text in zip(originals, (HTML_REVISION, "Hello, nice to meet you!", "Hey, good day to you.")):
        meta = {"method": cr.METHOD, "original_id": o, "principle": PRINCIPLE, "critique": "Too <u>curt</u>.",
                "round": 1, "critic_model": "/models/tiny-critic"}
        revisions.append(add_correction(project, o, text, ai, source="ai", meta=meta, over=[o])[0])
    window.show_page("text")
    window.text_page.show_tab("revisions")
    return window, originals, revisions


def test_accept_edit_reject_with_the_keys_and_undo(qtbot, review_window):
    window, originals, revisions = review_window
    project = window.project
    view = window.text_page.revisions
    assert window.text_page.tabs.currentWidget() is view
    assert view.current["id"] == revisions[0]
    assert view.progress_label.text() == "1 of 3 to review · 0 accepted · 0 edited · 0 rejected"
    # the four texts side by side, literally (an HTML-looking revision shows its tags)
    assert view.prompt_text.toPlainText() == "Greet me <please>."
    assert view.before_text.toPlainText() == "hi" and view.revision_text.toPlainText() == HTML_REVISION
    assert view.critique_text.toPlainText() == "Too <u>curt</u>."
    assert view.principle_label.text() == f"Principle asked: {PRINCIPLE}"
    for label in (view.principle_label, view.before_title, view.critique_title, view.revision_title,
                  view.progress_label, view.message):
        assert label.textFormat() == Qt.TextFormat.PlainText
    assert view.critique_title.text() == "Critique · round 1 · by tiny-critic"

    # Enter accepts: the person's label of (text before, revision), the revision preferred
    qtbot.keyClick(view, Qt.Key.Key_Return)
    assert view.current["id"] == revisions[1]  # the next one at once
    wait_saved(qtbot)
    human = project.comparisons(source="human")
    assert [(h["left_id"], h["right_id"], h["outcome"]) for h in human] == [(originals[0], revisions[0], "right")]
    assert json.loads(human[0]["meta_json"]) == {"reviewed_revision": revisions[0], "decision": "accept"}
    assert human[0]["labeller_id"] == project.ensure_labeller("you") and human[0]["response_ms"] >= 0
    assert view.progress_label.text() == "2 of 3 to review · 1 accepted · 0 edited · 0 rejected"

    # C edits: the box opens with the revision; an unchanged edit is refused in words and writes nothing
    qtbot.keyClick(view.revision_text, Qt.Key.Key_C)  # keys typed in a text box reach the view
    assert view.editing and view.edit_box.isVisible()
    assert view.edit_box.toPlainText() == "Hello, nice to meet you!"
    assert not view.buttons["accept"].isEnabled()
    qtbot.keyClick(view.edit_box, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert "unchanged" in view.message.text() and view.editing
    view.edit_box.setPlainText("Hello! How can I help?")
    qtbot.keyClick(view.edit_box, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    wait_saved(qtbot)
    assert not view.editing and view.current["id"] == revisions[2]
    assert not project.item_is_live(revisions[1])
    mine = [i for i in project.items("response") if i["source"] == "correction" and i["id"] not in revisions]
    assert [m["text"] for m in mine] == ["Hello! How can I help?"]
    meta = json.loads(mine[0]["meta_json"])
    assert meta["corrected_from"] == originals[1] and meta["reviewed_revision"] == revisions[1]
    assert json.loads(project.get_item(revisions[1])["meta_json"])["review"]["decision"] == "edit"
    assert "saved as response" in view.message.text()

    # R rejects: the revision and its AI pair are set aside
    qtbot.keyClick(view, Qt.Key.Key_R)
    wait_saved(qtbot)
    assert not project.item_is_live(revisions[2])
    assert view.current is None and "No AI revisions are waiting" in view.empty_label.text()
    assert cr.review_counts(project) == {"to_review": 0, "accepted": 1, "edited": 1, "rejected": 1}
    assert view.progress_label.text() == "Nothing to review · 1 accepted · 1 edited · 1 rejected"

    # Z undoes the reject, then the edit: each revision is back on screen and waiting
    qtbot.keyClick(view, Qt.Key.Key_Z)
    assert view.current["id"] == revisions[2]
    wait_saved(qtbot)
    assert project.item_is_live(revisions[2])
    qtbot.keyClick(view, Qt.Key.Key_Z)
    assert view.current["id"] == revisions[1]
    wait_saved(qtbot)
    assert project.item_is_live(revisions[1]) and not project.item_is_live(mine[0]["id"])
    assert [r["id"] for r in cr.revisions_to_review(project)] == revisions[1:]
    assert view.progress_label.text() == "2 of 3 to review · 1 accepted · 0 edited · 0 rejected"


def test_skip_cancel_and_the_run_button(qtbot, review_window, monkeypatch):
    window, _, revisions = review_window
    view = window.text_page.revisions
    qtbot.keyClick(view, Qt.Key.Key_S)
    assert view.current["id"] == revisions[1] and "comes back" in view.message.text()
    # someone else rejects the revision on screen meanwhile: accepting it stores nothing and says why
    cr.review_revision(window.project, revisions[1], "reject", window.project.ensure_labeller("bo"))
    qtbot.keyClick(view, Qt.Key.Key_Return)
    wait_saved(qtbot)
    assert "not a live AI revision" in view.message.text() and view.current["id"] == revisions[2]
    assert window.project.comparisons(source="human") == []
    qtbot.keyClick(view, Qt.Key.Key_C)
    qtbot.keyClick(view.edit_box, Qt.Key.Key_Escape)
    assert not view.editing and view.edit_box.isHidden() and view.message.text() == "Edit cancelled."
    assert window.project.comparisons(source="human") == []
    asked = []
    monkeypatch.setattr(window, "new_run_dialog", lambda job, **_: asked.append(job))  # not the modal dialog
    view.run_button.click()
    assert asked == ["critique_revise"]
