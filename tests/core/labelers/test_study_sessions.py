"""Labelling sessions in a study: each session labels as one labeller, sees the overlap pairs it has not
answered and never the others' answers, and records the guidelines version it was shown."""

from __future__ import annotations

from rlhf_core.labelers.session import PairSession, RankingSession
from tests.core.labelers.test_label_session import clips, run, show_next


def give(session: PairSession, outcome: str) -> int | None:
    step = session.label(outcome)
    cid = run(session.project, step)
    session.labelled(step.given, cid)
    return cid


def test_an_overlap_pair_goes_to_a_second_labeller_blind(project):
    queue = clips(project, n=4)  # 3 clip pairs
    with project.db.atomic():
        project.conn.execute("UPDATE pair_queue SET answers_wanted = 2 WHERE id = ?", [queue[0]])
    ann = PairSession(project, "clip", labeller="ann")
    bob = PairSession(project, "clip", labeller="bob")
    assert show_next(ann)["id"] == queue[0]
    first = give(ann, "left")
    assert show_next(ann)["id"] == queue[1]  # ann does not see it again
    assert ann.progress().waiting == 2
    # bob is shown the pair ann answered (it wants two answers) and not ann's answer
    assert bob.progress().waiting == 3 and show_next(bob)["id"] == queue[0]
    assert [r["id"] for r in bob.recent(12)] == []
    second = give(bob, "right")
    assert [r["id"] for r in bob.recent(12)] == [second] and [r["id"] for r in ann.recent(12)] == [first]
    assert {r["labeller_id"] for r in project.comparisons()} == {project.labeller_id("ann"), project.labeller_id("bob")}
    # a one-answer pair is labelled once: once ann answered it, bob does not get it
    give(ann, "tie")
    assert [p["id"] for p in bob.upcoming(5)] == [queue[2]]
    # ann's answer on a one-answer pair is no secret: bob's recent list shows it (numbered as before)
    assert [r["number"] for r in bob.recent(12)] == [3, 2]
    # switching the labeller: what comes next follows the new person
    bob.set_labeller("cat")
    assert [p["id"] for p in bob.upcoming(5)] == [queue[2]]


def test_an_undone_overlap_answer_comes_back_to_its_labeller(project):
    queue = clips(project, n=3)
    with project.db.atomic():
        project.conn.execute("UPDATE pair_queue SET answers_wanted = 2")
    ann, bob = PairSession(project, "clip", labeller="ann"), PairSession(project, "clip", labeller="bob")
    show_next(ann)
    cid = give(ann, "left")
    show_next(bob)
    give(bob, "left")
    step = ann.undo(cid)
    run(project, step)
    assert ann.reopened(cid)["id"] == queue[0] and bob.reopened(cid) is None
    assert [p["id"] for p in ann.upcoming(5)] == queue and [p["id"] for p in bob.upcoming(5)] == queue[1:]


def test_labels_record_the_guidelines_version_shown(project):
    clips(project, n=4)
    project.save_guidelines("Prefer the pole upright.")
    session = PairSession(project, "clip", labeller="ann")
    assert session.guideline_version == 1  # the newest when the session starts
    show_next(session)
    first = give(session, "left")
    project.save_guidelines("Prefer the pole upright and the cart centred.")
    session.guideline_version = project.guideline_version()  # what the view does when its pane shows v2
    show_next(session)
    second = give(session, "right")
    changed = run(project, session.change(first, "tie"))  # a change is given under the guidelines shown now
    versions = {c["id"]: c["guideline_version"] for c in project.comparisons()}
    assert versions == {second: 2, changed: 2}
    assert project.conn.execute("SELECT guideline_version FROM comparisons WHERE id = ?",
                                [first]).fetchone()[0] == 1
    ranking = RankingSession(project)
    assert ranking.guideline_version == 2
    a, b, c = ranking.load([c["id"] for c in project.items("clip")][:3])
    rid = run(project, ranking.save([[a], [b, c]], "ann"))
    assert project.conn.execute("SELECT guideline_version FROM rankings WHERE id = ?", [rid]).fetchone()[0] == 2
