"""The "Label text" page on a real project: pairs by keyboard, plain-text safety, corrections,
rankings of K responses and labeller agreement. Responses are inserted directly (no language model)."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QTextCursor

from rlhf_core.analysis.agreement import labeller_agreement
from tests.app.conftest import queued, wait_saved

HTMLISH = "<b>bold</b> and <script>alert('x')</script> &amp; <i>italic</i>"


def add_prompt(project, text, responses):
    pid = project.add_prompt(text)
    ids = [project.add_item("response", prompt_id=pid, text=t, model_id="tiny", source="generated")
           for t in responses]
    return pid, ids


@pytest.fixture
def text_window(window):
    project = window.project
    pid, ids = add_prompt(project, "Name a primary colour.", ["Red is a primary colour.", "Green, I think.",
                                                              "Blue is a primary colour of light."])
    window.text_page.set_project(project)
    window.show_page("text")
    return window, pid, ids


def test_keyboard_labelling_undo_and_change(qtbot, text_window):
    window, _, ids = text_window
    page = window.text_page
    view = page.pairs
    assert view.current is None and "Queue pairs" in view.empty_label.text()
    assert len(queued(qtbot, view)) == 3 and view.current is not None  # 3 responses -> 3 pairs
    assert view.progress_label.text() == "Labelled 0 · 3 waiting"
    # the clip view does not pick up pairs of responses from the shared queue
    window.clip_page.show_next()
    assert window.clip_page.current is None
    first = view.current
    assert {first["left_id"], first["right_id"]} <= set(ids)
    assert view.left_text.toPlainText() == window.project.get_item(first["left_id"])["text"]
    assert view.prompt_text.toPlainText() == "Name a primary colour."
    qtbot.wait(120)
    qtbot.keyClick(view, Qt.Key.Key_Left)
    qtbot.keyClick(view.right_text, Qt.Key.Key_2)  # keys typed while a response has the focus work too
    wait_saved(qtbot)
    comps = window.project.comparisons()
    assert [c["outcome"] for c in comps] == ["left", "right"]
    assert (comps[0]["left_id"], comps[0]["right_id"]) == (first["left_id"], first["right_id"])
    assert comps[0]["response_ms"] >= 100 and all(c["source"] == "human" for c in comps)
    assert {c["labeller_id"] for c in comps} == {window.project.ensure_labeller("you")}
    assert view.progress_label.text() == "Labelled 2 · 1 waiting"
    assert view.recent.count() == 2 and view.recent.item(0).text().startswith(f"#{comps[1]['id']}  response")
    # Z: the last label is soft-deleted and its pair is back on screen
    last_pair = (comps[1]["left_id"], comps[1]["right_id"])
    qtbot.keyClick(view, Qt.Key.Key_Z)
    wait_saved(qtbot)
    assert [c["outcome"] for c in window.project.comparisons()] == ["left"]
    deleted = window.project.comparisons(include_deleted=True)[1]
    assert deleted["deleted_at"] is not None
    assert (view.current["left_id"], view.current["right_id"]) == last_pair
    assert view.progress_label.text() == "Labelled 1 · 2 waiting"
    qtbot.keyClick(view, Qt.Key.Key_Equal)
    qtbot.keyClick(view, Qt.Key.Key_B)
    assert view.current is None and view.empty_label.isVisible()
    wait_saved(qtbot)
    assert [c["outcome"] for c in window.project.comparisons()] == ["left", "tie", "both_bad"]
    change = view.change_label(comps[0]["id"], "right")
    wait_saved(qtbot)
    new_id = change.result
    assert window.project.comparisons()[-1]["supersedes_id"] == comps[0]["id"] and new_id
    assert queued(qtbot, view) == [] and "No new pairs" in view.message.text()


def test_responses_are_plain_text_and_diff_uses_extra_selections(qtbot, window):
    project = window.project
    add_prompt(project, f"Prompt with {HTMLISH}", [HTMLISH, "🙂 the cat sat", "🙂 the dog sat"])
    page = window.text_page
    page.set_project(project)
    view = page.pairs
    queued(qtbot, view)
    pair = next(p for p in [view.current] if p)
    texts = {i: project.get_item(i)["text"] for i in (pair["left_id"], pair["right_id"])}
    # find and show the pair with the HTML-ish response
    while HTMLISH not in texts.values():
        qtbot.keyClick(view, Qt.Key.Key_S)
        pair = view.current
        texts = {i: project.get_item(i)["text"] for i in (pair["left_id"], pair["right_id"])}
    box = view.left_text if texts[pair["left_id"]] == HTMLISH else view.right_text
    assert box.toPlainText() == HTMLISH  # shown literally, tags and all
    assert "&lt;b&gt;bold&lt;/b&gt;" in box.document().toHtml() and "&lt;script&gt;" in box.document().toHtml()
    cursor = QTextCursor(box.document())
    cursor.setPosition(HTMLISH.index("bold") + 1)
    assert cursor.charFormat().fontWeight() != QFont.Weight.Bold
    assert view.prompt_text.toPlainText() == f"Prompt with {HTMLISH}"
    assert view.left_title.textFormat() == Qt.TextFormat.PlainText

    # the emoji pair: word diff highlights "cat" / "dog" (UTF-16 positions handled)
    while view.current is not None:
        texts = [project.get_item(view.current[k])["text"] for k in ("left_id", "right_id")]
        if set(texts) == {"🙂 the cat sat", "🙂 the dog sat"}:
            break
        qtbot.keyClick(view, Qt.Key.Key_S)
    assert view.left_text.extraSelections() == []
    qtbot.keyClick(view, Qt.Key.Key_D)
    assert view.diff_box.isChecked()
    (left_sel,), (right_sel,) = view.left_text.extraSelections(), view.right_text.extraSelections()
    words = {left_sel.cursor.selectedText(), right_sel.cursor.selectedText()}
    assert words == {"cat", "dog"}
    assert view.left_text.toPlainText() in {"🙂 the cat sat", "🙂 the dog sat"}  # text untouched
    qtbot.keyClick(view, Qt.Key.Key_D)
    assert view.left_text.extraSelections() == []


def test_correction_in_place_makes_one_item_and_pairs_with_every_sample(qtbot, text_window):
    window, pid, ids = text_window
    view = window.text_page.pairs
    queued(qtbot, view)
    pair = view.current
    # C then →: the right response becomes editable in place
    qtbot.keyClick(view, Qt.Key.Key_C)
    assert view.choosing_side and "Correct which response" in view.message.text()
    qtbot.keyClick(view, Qt.Key.Key_Right)
    assert view.correcting == "right" and not view.right_text.isReadOnly() and view.left_text.isReadOnly()
    assert view.correction_bar.isVisible() and not view.outcome_buttons["left"].isEnabled()
    # an empty text is refused with a message; nothing stored
    view.right_text.setPlainText("   ")
    qtbot.keyClick(view.right_text, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    wait_saved(qtbot)
    assert "empty" in view.message.text() and view.correcting == "right"
    assert window.project.counts()["responses"] == 3 and window.project.comparisons() == []
    # Esc cancels and shows the stored text again
    qtbot.keyClick(view.right_text, Qt.Key.Key_Escape)
    assert view.correcting is None and view.right_text.isReadOnly()
    assert view.right_text.toPlainText() == window.project.get_item(pair["right_id"])["text"]
    # a real correction, typed in place
    view.start_correction("left")
    view.left_text.setPlainText("Red, yellow and blue are the primary colours of paint.")
    qtbot.keyClick(view.left_text, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    wait_saved(qtbot)
    corrections = [i for i in window.project.items("response") if i["source"] == "correction"]
    assert len(corrections) == 1
    new = corrections[0]
    assert new["prompt_id"] == pid and json.loads(new["meta_json"])["corrected_from"] == pair["left_id"]
    comps = window.project.comparisons()
    assert len(comps) == 3  # 3 samples + 1 correction -> 3 pairs
    assert {(c["left_id"], c["right_id"], c["outcome"]) for c in comps} == {(i, new["id"], "right") for i in ids}
    assert len({c["labeller_id"] for c in comps}) == 1
    assert view.current == pair and view.left_text.isReadOnly()  # the pair can still be labelled
    assert "1 correction" in view.progress_label.text() and view.recent.count() == 3
    # Z undoes the whole correction (kept as deleted records)
    qtbot.keyClick(view, Qt.Key.Key_Z)
    wait_saved(qtbot)
    assert window.project.comparisons() == [] and len(window.project.comparisons(include_deleted=True)) == 3
    assert window.project.get_item(new["id"])["deleted_at"] is not None


def test_ranking_four_responses_makes_six_pairs_in_one_ranking(qtbot, window):
    project = window.project
    pid, ids = add_prompt(project, "Write a haiku about rain.", [f"haiku number {i}" for i in range(4)])
    add_prompt(project, "Only one response here", ["lonely"])
    page = window.text_page
    page.set_project(project)
    window.show_page("text")
    page.show_tab("rank")
    view = page.ranking
    assert view.prompt_ids() == [pid] and view.list.count() == 4  # the first prompt is loaded by itself
    assert view.prompt_text.toPlainText() == "Write a haiku about rain."
    # put the responses in id order (what dragging does), tie the last two
    items = [view.list.takeItem(0) for _ in range(4)]
    for item in sorted(items, key=lambda it: it.data(Qt.ItemDataRole.UserRole)):
        view.list.addItem(item)
    view.list.item(3).setCheckState(Qt.CheckState.Checked)
    assert view.groups() == [[ids[0]], [ids[1]], [ids[2], ids[3]]]
    view.list.setCurrentRow(1)
    assert view.full_text.toPlainText() == "haiku number 1"
    view.list.setFocus()
    qtbot.keyClick(view.list, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    wait_saved(qtbot)
    rankings = project.conn.execute("SELECT id, prompt_id, labeller_id FROM rankings").fetchall()
    assert len(rankings) == 1 and rankings[0]["prompt_id"] == pid and rankings[0]["labeller_id"] is not None
    comps = project.comparisons()
    assert len(comps) == 6 and {c["ranking_id"] for c in comps} == {rankings[0]["id"]}
    assert sorted(c["outcome"] for c in comps) == ["right"] * 5 + ["tie"]
    assert "6 pairs" in view.status.text() and view.recent.count() == 1
    assert view.prompt_box.itemText(0).startswith("✓")
    view._on_undo_clicked()
    wait_saved(qtbot)
    assert project.comparisons() == [] and view.recent.count() == 0


def test_agreement_panel_shows_the_core_numbers(qtbot, text_window):
    window, _, ids = text_window
    project = window.project
    _, more = add_prompt(project, "Say hello.", ["Hello!", "Hi there.", "Greetings."])
    ann, bob = project.ensure_labeller("ann"), project.ensure_labeller("bob")
    labels = [((ids[0], ids[1]), "left", "left"), ((ids[0], ids[2]), "tie", "right"),
              ((ids[1], ids[2]), "right", "right"), ((more[0], more[1]), "left", "tie"),
              ((more[1], more[2]), "right", "right")]
    for (a, b), x, y in labels:
        project.add_comparison(a, b, x, labeller_id=ann)
        swapped = {"left": "right", "right": "left"}.get(y, y)
        project.add_comparison(b, a, swapped, labeller_id=bob)  # bob saw them the other way round
    page = window.text_page
    page.show_tab("agreement")
    panel = page.agreement
    rep = labeller_agreement(project, item_kind="response")
    assert (rep.agree, rep.comparisons) == (3, 5)
    assert "Agreement 60.0 %" in panel.summary.text()
    # hand check: ann L T R L R, bob L R R T R -> p_o .6, p_e .4*.2 + .4*.6 + .2*.2 = .36 -> kappa .375
    assert rep.kappa == pytest.approx(0.375) and "Cohen's κ 0.38" in panel.summary.text()
    assert panel.table.rowCount() == 1
    assert [panel.table.item(0, c).text() for c in range(5)] == ["ann", "bob", "5", "60.0 %", "0.38"]
    assert panel.disagreements.rowCount() == 2
    assert panel.disagreements.item(0, 0).text() == f"{ids[0]} vs {ids[2]}"
    assert panel.disagreements.item(0, 2).text() == f"ann: tie · bob: {ids[2]} better"
    assert panel.disagreements.item(0, 1).text() == "Name a primary colour."
