"""The Labels page on a real project: filters, keyboard open / relabel / undo / restore with the store checked,
texts shown as plain text, and a table of 10,000 labels."""

from __future__ import annotations

import time
from datetime import date

import pytest
from PySide6.QtCore import Qt

from tests.app.conftest import wait_saved
from tests.app.labeling.test_labeling import fill


@pytest.fixture
def browser(qtbot, project):
    from app.labeling.label_browser import LabelBrowserView
    from app.labeling.writer import close_writer

    view = LabelBrowserView()
    qtbot.addWidget(view)
    view.resize(1280, 800)
    view.show()
    yield view
    close_writer(project)
    view.set_project(None)  # as the window does before it closes a project


@pytest.fixture
def labelled(project):
    """Clip labels by alice and bob, a text label whose response looks like HTML, one synthetic label."""
    fill(project, n_traj=2, pairs=1)
    clips = [c["id"] for c in project.items("clip")]
    pid = project.add_prompt("Which is <i>kinder</i>?")
    texts = [project.add_item("response", prompt_id=pid, text=t) for t in ("<b>Thanks!</b>", "Go away.")]
    alice, bob = project.ensure_labeller("alice"), project.ensure_labeller("bob")
    ids = {"c1": project.add_comparison(clips[0], clips[1], "left", labeller_id=alice, response_ms=1200,
                                        guideline_version=1),
           "c2": project.add_comparison(clips[2], clips[3], "right", labeller_id=bob, guideline_version=2),
           "t1": project.add_comparison(texts[0], texts[1], "left", labeller_id=alice),
           "s1": project.add_comparison(clips[1], clips[2], "tie", source="synthetic")}
    project.conn.execute("UPDATE comparisons SET created_at = '2026-01-10T09:00:00.000+00:00' WHERE id = ?",
                         [ids["c1"]])
    return project, ids


def shown(view) -> list[int]:
    return [r.id for r in view.model.rows]


def choose(box, value) -> None:
    at = box.findData(value)
    assert at >= 0, value
    box.setCurrentIndex(at)


def test_the_filters_show_the_labels_with_those_values(browser, labelled):
    project, ids = labelled
    browser.set_project(project)
    assert shown(browser) == [ids["s1"], ids["t1"], ids["c2"], ids["c1"]]  # newest first
    assert browser.count_label.text() == "4 labels shown"
    alice = next(l["id"] for l in project.labellers() if l["name"] == "alice")
    choose(browser.labeller_box, alice)
    assert shown(browser) == [ids["t1"], ids["c1"]]
    choose(browser.kind_box, "clip")
    assert shown(browser) == [ids["c1"]]
    choose(browser.labeller_box, None)
    choose(browser.guideline_box, 2)
    assert shown(browser) == [ids["c2"]]
    choose(browser.guideline_box, None)
    choose(browser.source_box, "synthetic")
    assert shown(browser) == [ids["s1"]]
    choose(browser.source_box, None)
    choose(browser.outcome_box, "right")
    assert shown(browser) == [ids["c2"]]
    choose(browser.outcome_box, None)
    choose(browser.kind_box, None)
    browser.set_days(date(2026, 1, 1), date(2026, 1, 31))
    assert shown(browser) == [ids["c1"]]
    browser.set_days(date(2026, 2, 1), None)
    assert sorted(shown(browser)) == sorted([ids["c2"], ids["t1"], ids["s1"]])
    browser.set_days(None, None)
    # a header click sorts: by labeller, the synthetic label (no labeller) first
    browser.table.sortByColumn(5, Qt.SortOrder.AscendingOrder)
    assert [r.labeller for r in browser.model.rows] == ["", "alice", "alice", "bob"]
    row = browser.model.rows.index(next(r for r in browser.model.rows if r.id == ids["c1"]))
    assert browser.model.data(browser.model.index(row, 4)) == "left better"
    assert browser.model.data(browser.model.index(row, 9)) == "1.2 s"


def test_open_relabel_undo_and_restore_from_the_keyboard(qtbot, browser, labelled):
    project, ids = labelled
    browser.set_project(project)
    table = browser.table
    table.setFocus()
    table.setCurrentIndex(browser.model.index(browser.model.row_of(ids["c1"]), 0))
    qtbot.keyClick(table, Qt.Key.Key_Return)  # open: the clips play side by side, the pane takes the keys
    assert browser.pane.hasFocus() or browser.focusWidget() is browser.pane
    qtbot.waitUntil(lambda: browser.preview.playing, timeout=10_000)
    assert browser.preview.left_panel.frames.shape[0] == browser.preview.right_panel.frames.shape[0] > 0
    c1 = project.conn.execute("SELECT left_id, right_id FROM comparisons WHERE id = ?", [ids["c1"]]).fetchone()
    assert browser.preview.pair == tuple(c1)
    qtbot.keyClick(browser.pane, Qt.Key.Key_Right)  # relabel in the opened pane: a new label replaces it
    wait_saved(qtbot)
    new = project.conn.execute("SELECT * FROM comparisons WHERE supersedes_id = ?", [ids["c1"]]).fetchone()
    assert new["outcome"] == "right" and new["deleted_at"] is None and not project.comparison_is_live(ids["c1"])
    assert browser.current_row().id == new["id"] and "relabelled" in browser.message.text()
    qtbot.keyClick(browser.pane, Qt.Key.Key_Escape)
    assert browser.table.hasFocus() or browser.focusWidget() is browser.table
    qtbot.keyClick(table, Qt.Key.Key_Z)  # undo: soft-deleted, out of the live list
    wait_saved(qtbot)
    assert not project.comparison_is_live(new["id"]) and new["id"] not in shown(browser)
    choose(browser.status_box, "all")
    table.setCurrentIndex(browser.model.index(browser.model.row_of(new["id"]), 0))
    assert browser.current_row().status == "undone"
    qtbot.keyClick(table, Qt.Key.Key_Z)  # undo of the undo: restored as a new label
    wait_saved(qtbot)
    restored = project.conn.execute("SELECT * FROM comparisons WHERE supersedes_id = ?", [new["id"]]).fetchone()
    assert restored["outcome"] == "right" and restored["deleted_at"] is None
    assert browser.current_row().id == restored["id"]
    qtbot.keyClick(table, Qt.Key.Key_Equal)  # relabel from the table: 1 / 2 / = / B / S
    wait_saved(qtbot)
    tie = project.conn.execute("SELECT * FROM comparisons WHERE supersedes_id = ?", [restored["id"]]).fetchone()
    assert tie["outcome"] == "tie"
    assert f"#{ids['c1']} left → #{new['id']} right → #{restored['id']} right (restore) → #{tie['id']} tie" \
        in browser.history_label.text()
    assert len(project.comparisons(include_deleted=True)) == 4 + 3  # every step kept
    # a replaced label is not changed again (its newer label is): said, nothing written
    table.setCurrentIndex(browser.model.index(browser.model.row_of(ids["c1"]), 0))
    qtbot.keyClick(table, Qt.Key.Key_1)
    qtbot.keyClick(table, Qt.Key.Key_Z)
    wait_saved(qtbot)
    assert "change that label instead" in browser.message.text()
    assert len(project.comparisons(include_deleted=True)) == 7


def test_a_label_changed_elsewhere_is_refused_with_a_sentence(qtbot, browser, labelled):
    from rlhf_core.store import Project

    project, ids = labelled
    browser.set_project(project)
    browser.table.setCurrentIndex(browser.model.index(browser.model.row_of(ids["c2"]), 0))
    with Project.open(project.folder, check=False) as other:
        other.undo_comparison(ids["c2"])  # another window undid it after this one listed it
    qtbot.keyClick(browser.table, Qt.Key.Key_1)
    wait_saved(qtbot)
    assert f"Label {ids['c2']} was undone meanwhile" in browser.message.text()
    assert project.conn.execute("SELECT count(*) FROM comparisons WHERE supersedes_id = ?", [ids["c2"]]).fetchone()[0] == 0
    assert ids["c2"] not in shown(browser)  # the list shows it as it is now


def test_texts_open_side_by_side_as_plain_text(browser, labelled):
    project, ids = labelled
    browser.set_project(project)
    browser.table.setCurrentIndex(browser.model.index(browser.model.row_of(ids["t1"]), 0))
    browser.open_current()
    preview = browser.preview
    assert preview.stack.currentWidget() is preview.texts_widget
    assert preview.left_text.toPlainText() == "<b>Thanks!</b>" and preview.right_text.toPlainText() == "Go away."
    assert preview.prompt.toPlainText() == "Which is <i>kinder</i>?"
    row = browser.model.row_of(ids["t1"])
    assert browser.model.data(browser.model.index(row, 12)) == "Which is <i>kinder</i>?"


def test_ten_thousand_labels_load_and_sort(browser, project):
    pid = project.add_prompt("Name a fruit.")
    items = [project.add_item("response", prompt_id=pid, text=f"answer {i}") for i in range(50)]
    people = [project.ensure_labeller(n) for n in ("ann", "ben", "cat", "dan")]
    with project.db.atomic():
        for i in range(10_000):
            project.add_comparison(items[i % 50], items[(i * 7 + 1) % 50] if (i * 7 + 1) % 50 != i % 50 else
                                   items[(i + 1) % 50], ("left", "right", "tie")[i % 3], labeller_id=people[i % 4],
                                   response_ms=i)
    start = time.perf_counter()
    browser.set_project(project)
    seconds = time.perf_counter() - start
    assert browser.model.rowCount() == 10_000 and browser.current_row().id == 10_000
    choose(browser.labeller_box, people[1])
    assert browser.model.rowCount() == 2_500 and {r.labeller for r in browser.model.rows} == {"ben"}
    browser.table.sortByColumn(9, Qt.SortOrder.AscendingOrder)  # time taken
    assert [r.response_ms for r in browser.model.rows[:3]] == [1, 5, 9]
    print(f"10,000 labels: set_project (choices, query, model, first pair) {seconds:.3f} s")
