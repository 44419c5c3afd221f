"""What the labelling headers say is true: response times count only while the pair is visible, label
numbers are places in the "Labelled N" count, and every view counts the same waiting pairs."""

from __future__ import annotations

from rlhf_core.labelers.session import PairSession, RankingSession
from tests.core.labelers.test_label_session import Clock, clips, label, responses, run, show_next


def test_response_time_counts_only_while_the_pair_is_visible(project):
    clips(project)
    clock = Clock()
    session = PairSession(project, "clip", clock=clock)
    session.set_visible(False)  # the page is not shown yet
    pair = show_next(session)  # loaded at t = 100 on the hidden page
    clock.now += 100.0  # the person opens the page 100 s later
    session.set_visible(True)
    clock.now += 2.0
    session.set_visible(False)  # another window in front for 30 s
    clock.now += 30.0
    session.set_visible(True)
    clock.now += 0.5
    step = label(session, "left")
    session.labelled(step.given, run(project, step))
    comp = project.comparisons()[0]
    assert (comp["left_id"], comp["response_ms"]) == (pair["left_id"], 2500)
    # the next pair is on a visible page: it counts from the moment it is shown
    clock.now += 1.25
    step = label(session, "right")
    session.labelled(step.given, run(project, step))
    assert project.comparisons()[1]["response_ms"] == 1250


def test_a_ranking_counts_only_while_visible(project):
    clock = Clock()
    session = RankingSession(project, clock=clock)
    ids = [project.add_item("trajectory", env_id="CartPole-v1", length=10, true_return=float(i)) for i in range(3)]
    session.set_visible(False)
    session.load(ids)
    clock.now += 50.0
    session.set_visible(True)
    clock.now += 4.0
    run(project, session.save([[ids[0]], [ids[1], ids[2]]], "ann"))
    assert project.conn.execute("SELECT response_ms FROM rankings").fetchone()[0] == 4000


def test_label_numbers_are_places_in_the_labelled_count(project):
    clips(project, n=6)
    session = PairSession(project, "clip")
    show_next(session)
    for outcome in ("left", "right", "tie", "left"):
        step = label(session, outcome)
        session.labelled(step.given, run(project, step))
    undo = session.undo_last()  # the fourth label is undone: its row stays (deleted), ids go on
    run(project, undo)
    step = label(session, "both_bad")
    session.labelled(step.given, run(project, step))
    labelled = session.progress().labelled
    rows = session.recent(12)
    assert labelled == 4 and max(r["id"] for r in rows) == 5  # the id would say 5, the count says 4
    assert [r["number"] for r in rows] == [4, 3, 2, 1]


def test_response_label_numbers_follow_the_count_and_corrections_have_none(project):
    responses(project, prompts=1, per_prompt=3)
    ai = project.ensure_labeller("judge", "ai")
    first = project.pending_pairs_of("response", limit=1)[0]
    project.claim_pair(first["id"], "left", labeller_id=ai, source="ai")  # an AI's label counts ("1 by AI")
    session = PairSession(project, "response")
    pair = show_next(session)
    step = session.correct(pair["left_id"], "a better answer", "ann")
    run(project, step)
    session.corrected(step.given)
    step = label(session, "right")
    session.labelled(step.given, run(project, step))
    progress = session.progress()
    rows = session.recent(12)
    numbered = [r["number"] for r in rows if r["number"] is not None]
    assert progress.labelled == 2 and numbered == [2, 1]
    assert [r["number"] for r in rows if r["correction"] is not None] == [None, None, None]


def test_every_view_counts_the_same_waiting_pairs(project):
    queue = clips(project, n=5)  # 4 clip pairs
    responses(project, prompts=2, per_prompt=3)  # 6 text pairs
    with project.db.atomic():  # the last clip deleted (no store method deletes items): its pair waits no more
        project.conn.execute("UPDATE items SET deleted_at = '2026-01-01' WHERE id = "
                             "(SELECT right_id FROM pair_queue WHERE id = ?)", [queue[-1]])
    waiting = project.waiting_counts()
    clip_view, text_view = PairSession(project, "clip"), PairSession(project, "response")
    assert waiting == {"clip": clip_view.progress().waiting, "response": text_view.progress().waiting}
    assert project.counts()["queued_pairs"] == sum(waiting.values()) == 3 + 6
