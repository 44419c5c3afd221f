"""Disagreements and their adjudication on a real project (rlhf_core.labelers.adjudication and
Project.add_adjudication): which pairs are disputed, what a decision writes, the stale-decision refusal."""

from __future__ import annotations

import json

import pytest

from rlhf_core.labelers.adjudication import AdjudicationSession, find_disputes
from rlhf_core.store import Project
from rlhf_core.store.project import LabelChangedError

from tests.core.labelers.test_browse import items


@pytest.fixture
def disputed(project):
    """Texts 0-1: alice vs bob (bob's given the other way round: a real disagreement); texts 0-2: both agree;
    texts 1-2: a skip is no judgement; clips 0-1: tie vs right vs right; clips 1-2: one person twice."""
    clips, texts = items(project)
    alice, bob, carol = (project.ensure_labeller(n) for n in ("alice", "bob", "carol"))
    add = project.add_comparison
    ids = {"a": add(texts[0], texts[1], "left", labeller_id=alice, response_ms=1500),
           "b": add(texts[1], texts[0], "left", labeller_id=bob, response_ms=700)}
    add(texts[0], texts[2], "left", labeller_id=alice)
    add(texts[0], texts[2], "left", labeller_id=bob)
    add(texts[1], texts[2], "skip", labeller_id=alice)
    add(texts[1], texts[2], "right", labeller_id=bob)
    ids |= {"c1": add(clips[0], clips[1], "tie", labeller_id=alice),
            "c2": add(clips[0], clips[1], "right", labeller_id=bob),
            "c3": add(clips[1], clips[0], "left", labeller_id=carol)}
    add(clips[1], clips[2], "left", labeller_id=alice)
    add(clips[1], clips[2], "right", labeller_id=alice)
    return project, clips, texts, ids


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_disputes_are_pairs_that_two_labellers_answered_differently(disputed):
    project, clips, texts, ids = disputed
    open_, settled = find_disputes(project)
    assert [d.key for d in open_] == [(texts[0], texts[1]), (clips[0], clips[1])] and settled == 0
    text = open_[0]
    assert [(r["labeller"], r["shown"], r["response_ms"]) for r in text.labels] == [("alice", "left", 1500),
                                                                                  ("bob", "right", 700)]
    assert text.kind == "response" and text.label_ids == [ids["a"], ids["b"]] and text.previous is None
    assert [r["shown"] for r in open_[1].labels] == ["tie", "right", "right"]
    assert [d.key for d in find_disputes(project, "clip")[0]] == [(clips[0], clips[1])]


def test_a_decision_is_an_adjudication_label_that_settles_the_pair(disputed):
    project, _, texts, ids = disputed
    clock = Clock()
    session = AdjudicationSession(project, "response", clock=clock)
    session.show(session.upcoming())
    clock.now += 2.5
    step = session.decide("right", "judge")
    assert session.current is None and session.upcoming() is None  # its decision is on its way
    cid = step.fn(project)
    session.decided(step.given, cid)
    row = project.conn.execute("SELECT c.*, l.name FROM comparisons c JOIN labellers l ON l.id = c.labeller_id "
                               "WHERE c.id = ?", [cid]).fetchone()
    assert (row["role"], row["name"], row["source"], row["outcome"], row["response_ms"]) == (
        "adjudication", "judge", "human", "right", 2500)
    assert (row["left_id"], row["right_id"]) == (texts[0], texts[1])
    assert json.loads(row["meta_json"])["adjudicates"] == [ids["a"], ids["b"]]
    assert project.comparison_is_live(ids["a"]) and project.comparison_is_live(ids["b"])  # nothing lost
    assert session.disputes == [] and session.settled == 1
    # Z: the decision is undone (kept, soft-deleted) and the pair is open again
    undo = session.undo_last()
    assert undo.fn(project) == cid and not project.comparison_is_live(cid)
    session.reload()
    assert [d.key for d in session.disputes] == [(texts[0], texts[1])]


@pytest.mark.parametrize("change", ["added", "undone", "relabelled", "adjudicated"])
def test_a_decision_on_labels_that_changed_meanwhile_is_refused_with_nothing_written(disputed, change):
    project, _, texts, ids = disputed
    session = AdjudicationSession(project, "response")
    session.show(session.upcoming())
    step = session.decide("left", "judge")
    other = Project.open(project.folder, check=False)  # another window or a CLI labeller, meanwhile
    try:
        if change == "added":
            other.add_comparison(texts[0], texts[1], "right", labeller_id=other.ensure_labeller("dave"))
        elif change == "undone":
            other.undo_comparison(ids["b"])
        elif change == "relabelled":
            other.edit_comparison(ids["a"], "tie")
        else:
            rival = AdjudicationSession(other, "response")  # a second adjudicator decides first
            rival.show(rival.upcoming())
            rival.decide("right", "rival").fn(other)
    finally:
        other.close()
    before = len(project.comparisons(include_deleted=True))
    with pytest.raises(LabelChangedError) as err:
        step.fn(project)
    expected = {"added": "changed since they were shown (label", "undone": "undone or relabelled",
                "relabelled": "undone or relabelled", "adjudicated": "were adjudicated meanwhile"}[change]
    assert expected in str(err.value) and "not saved" in str(err.value)
    assert len(project.comparisons(include_deleted=True)) == before and not project.conn.in_transaction
    assert "judge" not in [l["name"] for l in project.labellers()]  # not even the adjudicator's name
    session.failed(step.given)
    if change == "undone":
        assert session.disputes == []  # one label left: nothing to settle
        return
    if change == "adjudicated":
        assert session.disputes == [] and session.settled == 1
        return
    session.show(session.upcoming())  # shown again as it is now: the decision goes through
    cid = session.decide("left", "judge").fn(project)
    assert project.pair_comparisons(texts[0], texts[1])[-1]["id"] == cid


def test_a_label_after_a_decision_reopens_the_pair_and_a_new_decision_replaces_the_old(disputed):
    project, _, texts, _ = disputed
    session = AdjudicationSession(project, "response")
    session.show(session.upcoming())
    first = session.decide("left", "judge").fn(project)
    project.add_comparison(texts[1], texts[0], "right", labeller_id=project.ensure_labeller("dave"))
    session.reload()
    (again,) = session.disputes
    assert again.previous_id == first and len(again.labels) == 3
    session.show(again)
    second = session.decide("right", "judge").fn(project)
    rows = project.pair_comparisons(texts[0], texts[1])
    assert [r["id"] for r in rows if r["role"] == "adjudication"] == [second]
    assert not project.comparison_is_live(first)
    assert project.conn.execute("SELECT supersedes_id FROM comparisons WHERE id = ?", [second]).fetchone()[0] == first
    session.reload()
    assert session.disputes == [] and session.settled == 1


def test_a_decision_relabelled_in_the_browser_stays_an_adjudication_of_the_same_labels(disputed):
    from rlhf_core.labelers import browse

    project, _, texts, ids = disputed
    session = AdjudicationSession(project, "response")
    session.show(session.upcoming())
    first = session.decide("left", "judge").fn(project)
    second = browse.relabel(first, "tie")(project)
    row = project.conn.execute("SELECT * FROM comparisons WHERE id = ?", [second]).fetchone()
    assert (row["role"], row["outcome"], row["supersedes_id"]) == ("adjudication", "tie", first)
    assert json.loads(row["meta_json"])["adjudicates"] == [ids["a"], ids["b"]]
    assert find_disputes(project, "response") == ([], 1)
