"""The Adjudicate page on a real project: disputes shown with each label, decided by keys into role =
'adjudication' rows, passed over, undone, and a stale decision refused with a sentence."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt

from tests.app.conftest import wait_saved
from tests.app.labeling.test_labeling import fill


@pytest.fixture
def view(qtbot, project, settings):
    from app.labeling.adjudication_view import AdjudicationView
    from app.labeling.writer import close_writer

    settings.labeller = "judge"
    w = AdjudicationView(settings)
    qtbot.addWidget(w)
    w.resize(1280, 800)
    w.show()
    yield w
    close_writer(project)
    w.set_project(None)


@pytest.fixture
def disputes(project):
    """Two disputed pairs (clips, then texts) and one agreed pair."""
    fill(project, n_traj=2, pairs=1)
    clips = [c["id"] for c in project.items("clip")]
    pid = project.add_prompt("Say hello.")
    texts = [project.add_item("response", prompt_id=pid, text=t) for t in ("Hello!", "<b>Go</b> away.")]
    alice, bob = project.ensure_labeller("alice"), project.ensure_labeller("bob")
    add = project.add_comparison
    clip_labels = [add(clips[0], clips[1], "left", labeller_id=alice, response_ms=1500),
                   add(clips[1], clips[0], "left", labeller_id=bob, response_ms=900)]
    text_labels = [add(texts[0], texts[1], "tie", labeller_id=alice), add(texts[0], texts[1], "left", labeller_id=bob)]
    add(clips[2], clips[3], "left", labeller_id=alice)
    add(clips[2], clips[3], "left", labeller_id=bob)
    return project, (clips[0], clips[1]), clip_labels, (texts[0], texts[1]), text_labels


def adjudications(project) -> list[dict]:
    return [dict(r) for r in project.conn.execute(
        "SELECT c.*, l.name FROM comparisons c JOIN labellers l ON l.id = c.labeller_id "
        "WHERE c.role = 'adjudication' ORDER BY c.id")]


def test_keys_decide_disputes_as_adjudication_labels(qtbot, view, disputes):
    project, clip_pair, clip_labels, text_pair, text_labels = disputes
    view.set_project(project)
    view.setFocus()
    assert view.current.key == clip_pair and view.progress_label.text() == "2 disputes to settle · 0 settled"
    shown = [[view.labels.topLevelItem(i).text(c) for c in range(3)] for i in range(view.labels.topLevelItemCount())]
    assert shown == [["alice", "left better", "1.5 s"], ["bob", "right better", "0.9 s"]]
    qtbot.waitUntil(lambda: view.preview.playing, timeout=10_000)  # the clips play side by side
    qtbot.keyClick(view, Qt.Key.Key_N)  # later: the texts come first now
    assert view.current.key == text_pair
    assert view.preview.left_text.toPlainText() == "Hello!" and view.preview.right_text.toPlainText() == \
        "<b>Go</b> away."
    qtbot.keyClick(view, Qt.Key.Key_Left)
    assert view.current.key == clip_pair  # the next dispute at once
    qtbot.keyClick(view, Qt.Key.Key_B)
    wait_saved(qtbot)
    (text_decision, clip_decision) = adjudications(project)
    assert (text_decision["outcome"], text_decision["name"], text_decision["source"]) == ("left", "judge", "human")
    assert (text_decision["left_id"], text_decision["right_id"]) == text_pair
    assert json.loads(text_decision["meta_json"])["adjudicates"] == text_labels
    assert clip_decision["outcome"] == "both_bad" and json.loads(clip_decision["meta_json"])["adjudicates"] == \
        clip_labels
    assert all(project.comparison_is_live(c) for c in clip_labels + text_labels)  # the disputed labels stay
    assert view.current is None and view.empty_label.isVisible()
    assert view.progress_label.text() == "0 disputes to settle · 2 settled"
    qtbot.keyClick(view, Qt.Key.Key_Z)  # undo the last decision: its pair is open again
    wait_saved(qtbot)
    assert not project.comparison_is_live(clip_decision["id"])
    assert view.current.key == clip_pair and view.progress_label.text() == "1 dispute to settle · 1 settled"


def test_a_decision_on_labels_changed_meanwhile_is_refused_and_the_pair_shown_again(qtbot, view, disputes):
    from rlhf_core.store import Project

    project, clip_pair, clip_labels, _, _ = disputes
    view.set_project(project)
    view.setFocus()
    assert view.current.key == clip_pair
    with Project.open(project.folder, check=False) as other:  # a third labeller answers it in another window
        carol = other.add_comparison(clip_pair[0], clip_pair[1], "right", labeller_id=other.ensure_labeller("carol"))
    qtbot.keyClick(view, Qt.Key.Key_Right)
    wait_saved(qtbot)
    assert "changed since they were shown" in view.message.text() and "not saved" in view.message.text()
    assert adjudications(project) == []
    assert view.current.key == clip_pair and view.labels.topLevelItemCount() == 3  # as it is now
    qtbot.keyClick(view, Qt.Key.Key_Right)
    wait_saved(qtbot)
    (decision,) = adjudications(project)
    assert json.loads(decision["meta_json"])["adjudicates"] == [*clip_labels, carol]
