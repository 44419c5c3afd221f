"""The label browser's data on a real project: filters by value, relabel / undo / restore as new facts, and
writes refused (nothing written) when another connection changed the label first."""

from __future__ import annotations

import json
from datetime import date

import pytest

from rlhf_core.labelers import browse
from rlhf_core.labelers.browse import NO_VERSION, LabelFilter
from rlhf_core.store import Project
from rlhf_core.store.project import LabelChangedError


def items(project):
    """Three clips of one trajectory and three responses to one prompt."""
    traj = project.add_item("trajectory", env_id="CartPole-v1", length=12)
    clips = [project.add_item("clip", parent_id=traj, env_id="CartPole-v1", start_step=i, end_step=i + 4)
             for i in range(3)]
    pid = project.add_prompt("Name a fruit.")
    texts = [project.add_item("response", prompt_id=pid, text=t) for t in ("apple", "a rock", "pear")]
    return clips, texts


@pytest.fixture
def labelled(project):
    clips, texts = items(project)
    alice, bob = project.ensure_labeller("alice"), project.ensure_labeller("bob")
    ids = {
        "c1": project.add_comparison(clips[0], clips[1], "left", labeller_id=alice, response_ms=900,
                                     guideline_version=1),
        "c2": project.add_comparison(clips[1], clips[2], "right", labeller_id=bob, guideline_version=2),
        "t1": project.add_comparison(texts[0], texts[1], "left", labeller_id=alice),
        "t2": project.add_comparison(texts[0], texts[2], "tie", source="synthetic"),
    }
    for name, day in (("c1", "2026-01-10"), ("c2", "2026-01-11"), ("t1", "2026-01-12"), ("t2", "2026-01-12")):
        project.conn.execute("UPDATE comparisons SET created_at = ? WHERE id = ?", [f"{day}T12:00:00.000+00:00",
                                                                                 ids[name]])
    return project, ids, alice, bob


def names(project, ids, flt):
    back = {v: k for k, v in ids.items()}
    return [back.get(r.id, r.id) for r in browse.query_labels(project, flt)]


def test_each_filter_picks_the_labels_with_that_value(labelled):
    project, ids, alice, bob = labelled
    assert names(project, ids, LabelFilter()) == ["c1", "c2", "t1", "t2"]
    assert names(project, ids, LabelFilter(labeller_id=alice)) == ["c1", "t1"]
    assert names(project, ids, LabelFilter(source="synthetic")) == ["t2"]
    assert names(project, ids, LabelFilter(outcome="left")) == ["c1", "t1"]
    assert names(project, ids, LabelFilter(kind="clip")) == ["c1", "c2"]
    assert names(project, ids, LabelFilter(kind="response")) == ["t1", "t2"]
    assert names(project, ids, LabelFilter(guideline=2)) == ["c2"]
    assert names(project, ids, LabelFilter(guideline=NO_VERSION)) == ["t1", "t2"]
    assert names(project, ids, LabelFilter(since=date(2026, 1, 11))) == ["c2", "t1", "t2"]
    assert names(project, ids, LabelFilter(until=date(2026, 1, 11))) == ["c1", "c2"]
    assert names(project, ids, LabelFilter(since=date(2026, 1, 11), until=date(2026, 1, 11))) == ["c2"]
    assert names(project, ids, LabelFilter(kind="response", labeller_id=alice)) == ["t1"]
    assert names(project, ids, LabelFilter(role="adjudication")) == []
    rows = {r.id: r for r in browse.query_labels(project)}
    c1, t2 = rows[ids["c1"]], rows[ids["t2"]]
    assert (c1.kind, c1.labeller, c1.response_ms, c1.guideline_version, c1.prompt) == ("clip", "alice", 900, 1, "")
    assert (t2.kind, t2.labeller, t2.source, t2.prompt, t2.status) == ("response", "", "synthetic", "Name a fruit.",
                                                                        "live")
    choices = browse.choices(project)
    assert choices.labellers == [(alice, "alice"), (bob, "bob")]
    assert choices.sources == ["human", "synthetic"] and choices.kinds == ["clip", "response"]
    assert choices.guideline_versions == [1, 2] and choices.unversioned
    assert (choices.first_day, choices.last_day) == (date(2026, 1, 10), date(2026, 1, 12))
    with pytest.raises(ValueError, match="status must be one of"):
        browse.query_labels(project, LabelFilter(status="gone"))


def test_relabel_undo_and_restore_are_new_facts_and_nothing_is_lost(labelled):
    project, ids, alice, _ = labelled
    c1 = ids["c1"]
    new = browse.relabel(c1, "right")(project)
    row = project.conn.execute("SELECT * FROM comparisons WHERE id = ?", [new]).fetchone()
    assert (row["outcome"], row["supersedes_id"], row["labeller_id"], row["deleted_at"]) == ("right", c1, alice, None)
    assert not project.comparison_is_live(c1)
    assert browse.undo(new)(project) == new and not project.comparison_is_live(new)
    assert new not in [r.id for r in browse.query_labels(project)]
    restored = browse.restore(new)(project)
    again = project.conn.execute("SELECT * FROM comparisons WHERE id = ?", [restored]).fetchone()
    assert (again["outcome"], again["supersedes_id"], again["labeller_id"], again["role"]) == ("right", new, alice,
                                                                                              "label")
    assert json.loads(again["meta_json"])["restores"] == new
    status = {r.id: r.status_text() for r in browse.query_labels(project, LabelFilter(status="all"))}
    assert status[c1] == f"replaced by {new}" and status[new] == f"restored as {restored}"
    assert status[restored] == "live"
    assert [r.id for r in browse.query_labels(project, LabelFilter(status="changed"))] == [c1, new]
    assert browse.history_text(browse.history(project, new)) == f"#{c1} left → #{new} right → #{restored} right (restore)"
    assert len(project.comparisons(include_deleted=True)) == 4 + 2  # every version kept


def test_a_label_changed_in_another_connection_is_refused_with_nothing_written(labelled):
    project, ids, _, _ = labelled
    other = Project.open(project.folder, check=False)  # a second window or a CLI labeller
    try:
        other.undo_comparison(ids["c2"])
        replacement = other.edit_comparison(ids["t1"], "tie")
    finally:
        other.close()
    before = len(project.comparisons(include_deleted=True))
    with pytest.raises(LabelChangedError, match=f"Label {ids['c2']} was undone meanwhile"):
        browse.relabel(ids["c2"], "left")(project)
    with pytest.raises(LabelChangedError, match=f"was replaced by label {replacement}"):
        browse.undo(ids["t1"])(project)
    with pytest.raises(LabelChangedError, match="was replaced"):
        browse.restore(ids["t1"])(project)
    assert len(project.comparisons(include_deleted=True)) == before and not project.conn.in_transaction
    restored = browse.restore(ids["c2"])(project)
    with pytest.raises(LabelChangedError, match=f"restored as label {restored}"):
        browse.restore(ids["c2"])(project)
    with pytest.raises(ValueError, match="There is no label 999"):
        browse.undo(999)(project)


def test_a_restored_label_answers_its_queue_entry_again(project):
    clips, _ = items(project)
    alice = project.ensure_labeller("alice")
    queue_id = project.enqueue_pair(clips[0], clips[2])
    cid = project.claim_pair(queue_id, "left", labeller_id=alice)
    project.undo_comparison(cid)
    assert project.waiting_count("clip") == 1
    restored = browse.restore(cid)(project)
    assert project.waiting_count("clip") == 0
    answers = project.conn.execute("SELECT comparison_id FROM queue_answers WHERE queue_id = ?", [queue_id]).fetchall()
    assert [a[0] for a in answers] == [restored]
