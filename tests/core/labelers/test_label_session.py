"""Labelling sessions on a real project: label, undo (acked or not), exclusions, progress, response
time, a failed write putting its pair back, corrections, AI review, rankings. Writes run at once,
in order, on the same project (the app runs them in its writer thread)."""

from __future__ import annotations

import random

import pytest

from rlhf_core.labelers.session import TIED, PairSession, RankingSession, order_text
from rlhf_core.store import Project
from rlhf_core.labelers.text_labels import queue_response_pairs


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run(project: Project, step):
    """The app's writer, synchronously: run the write; roll back and re-raise when it fails."""
    try:
        return step.fn(project)
    except BaseException:
        project.rollback()
        raise


@pytest.fixture
def project(tmp_path):
    with Project.create(tmp_path / "s.rlhf") as p:
        yield p


def responses(project: Project, prompts: int = 2, per_prompt: int = 3) -> list[int]:
    for i in range(prompts):
        pid = project.add_prompt(f"prompt {i}")
        for r in range(per_prompt):
            project.add_item("response", prompt_id=pid, text=f"answer {r} to {i}", source="generated")
    return queue_response_pairs(project, seed=0)


def clips(project: Project, n: int = 4) -> list[int]:
    traj = project.add_item("trajectory", env_id="CartPole-v1", length=40, true_return=10.0)
    ids = [project.add_item("clip", parent_id=traj, start_step=i, end_step=i + 8, true_return=float(i))
           for i in range(n)]
    return [project.enqueue_pair(a, b) for a, b in zip(ids, ids[1:])]


def show_next(session: PairSession) -> dict | None:
    nxt = session.upcoming(1)
    session.show(nxt[0] if nxt else None)
    return session.current


def label(session: PairSession, outcome: str, name: str = "ann"):
    step = session.label(outcome, name)
    show_next(session)
    return step


def test_label_stores_response_time_and_counts_progress(project):
    queue = clips(project)
    clock = Clock()
    session = PairSession(project, "clip", clock=clock)
    assert session.progress().waiting == 3 and show_next(session)["id"] == queue[0]
    clock.now += 1.5
    step = label(session, "left")
    cid = run(project, step)
    session.labelled(step.given, cid)
    comp = project.comparisons()[0]
    assert (comp["outcome"], comp["response_ms"], comp["source"]) == ("left", 1500, "human")
    assert project.labellers()[0]["name"] == "ann"
    progress = session.progress()
    assert (progress.labelled, progress.waiting) == (1, 2)
    assert [r["id"] for r in session.recent(12)] == [cid] and session.recent(12)[0]["labeller"] == "ann"


def test_pairs_in_flight_are_left_out_until_acked(project):
    queue = clips(project)
    session = PairSession(project, "clip")
    show_next(session)
    first, second = label(session, "left"), label(session, "right")
    assert session.current["id"] == queue[2]  # neither in-flight pair comes next
    assert [p["id"] for p in session.upcoming(5)] == [queue[2]]
    session.labelled(first.given, run(project, first))
    session.labelled(second.given, run(project, second))
    assert [p["id"] for p in session.upcoming(5)] == [queue[2]]


def test_undo_of_a_label_not_acked_yet_undoes_the_right_row(project):
    queue = clips(project)
    session = PairSession(project, "clip")
    show_next(session)
    step = label(session, "tie")
    undo = session.undo_last()  # before the label's write has run
    assert undo.given is step.given and undo.show["id"] == queue[0]
    session.show(undo.show)
    cid = run(project, step)  # the writer runs them in order
    assert run(project, undo) == cid
    session.labelled(step.given, cid)
    assert project.comparisons() == [] and len(project.comparisons(include_deleted=True)) == 1
    assert session.upcoming(1)[0]["id"] == queue[0] and session.progress().labelled == 0
    assert session.undo_last() is None


def test_undo_skips_labels_undone_elsewhere_and_by_id_reopens_the_pair(project):
    queue = clips(project)
    session = PairSession(project, "clip")
    show_next(session)
    steps = [label(session, o) for o in ("left", "right")]
    cids = [run(project, s) for s in steps]
    for s, c in zip(steps, cids):
        session.labelled(s.given, c)
    project.undo_comparison(cids[1])  # another labeller (or the recent list) undid the newest
    undo = session.undo_last()
    assert undo.given is steps[0].given and run(project, undo) == cids[0]
    assert session.undo_last() is None
    by_id = session.undo(cids[0])  # undoing an undone label again changes nothing
    assert run(project, by_id) == cids[0] and session.reopened(cids[0])["id"] == queue[0]


def test_change_relabels_and_undo_follows_the_new_row(project):
    clips(project)
    session = PairSession(project, "clip")
    show_next(session)
    step = label(session, "left")
    cid = run(project, step)
    session.labelled(step.given, cid)
    new_id = run(project, session.change(cid, "right"))
    assert [(c["id"], c["outcome"], c["supersedes_id"]) for c in project.comparisons()] == [(new_id, "right", cid)]
    assert run(project, session.undo_last()) == new_id and project.comparisons() == []


def test_a_failed_write_puts_the_pair_back(project):
    queue = clips(project)
    session = PairSession(project, "clip")
    show_next(session)
    step = label(session, "left")

    def failing(p):  # the disk fills up halfway through the write
        p.conn.execute("BEGIN IMMEDIATE")
        raise ValueError("disk full")

    step.fn = failing
    with pytest.raises(ValueError):
        run(project, step)
    assert not project.conn.in_transaction
    assert session.failed(step.given)["id"] == queue[0]
    assert session.undo_last() is None and project.comparisons() == []
    assert session.upcoming(1)[0]["id"] == queue[0]


def test_a_pair_labelled_elsewhere_meanwhile_is_not_on_the_undo_stack(project):
    queue = clips(project)
    session = PairSession(project, "clip")
    show_next(session)
    step = label(session, "left")
    project.claim_pair(queue[0], "right", source="synthetic")
    cid = run(project, step)
    assert cid is None
    session.labelled(step.given, cid)
    assert session.given == [] and session.undo_last() is None


def test_response_sessions_see_only_responses_and_count_corrections(project):
    clips(project)
    responses(project, prompts=1, per_prompt=3)
    session = PairSession(project, "response")
    pair = show_next(session)
    assert project.get_item(pair["left_id"])["kind"] == "response"
    assert session.progress().waiting == 3
    step = session.correct(pair["left_id"], "a much better answer", "ann")
    new_id, cids = run(project, step)
    session.corrected(step.given)
    progress = session.progress()
    assert progress.corrections == 1 and progress.labelled == 0 and len(cids) == 3
    assert session.recent(12)[0]["correction"] == new_id
    undo = session.undo(cids[0])  # a comparison of a correction undoes the whole correction
    assert undo.what == "correction" and run(project, undo) == (new_id, 3)
    assert session.progress().corrections == 0 and session.undo_last() is None


def test_reviewing_ai_labels(project):
    responses(project, prompts=1, per_prompt=3)
    ai = project.ensure_labeller("judge", "ai")
    for q in project.pending_pairs_of("response", limit=2):
        project.claim_pair(q["id"], "left", labeller_id=ai, source="ai")
    session = PairSession(project, "response")
    session.set_reviewing(True)
    progress = session.progress()
    assert progress.reviewing and (progress.to_review, progress.reviewed) == (2, 0)
    first = show_next(session)
    assert first["source"] == "ai"
    step = label(session, "right")
    assert session.current["id"] != first["id"]  # the answered AI label is left out while in flight
    session.labelled(step.given, run(project, step))
    assert (session.progress().to_review, session.progress().reviewed) == (1, 1)
    undo = session.undo_last()
    assert undo.show is first
    session.set_reviewing(False)  # the undone review belongs to review mode: not shown in the queue
    assert session.undo_last() is None
    assert session.progress().by_ai == 2


def test_ranking_save_and_undo(project):
    responses(project, prompts=1, per_prompt=3)
    prompt = project.prompts_with_responses(2)[0]
    clock = Clock()
    session = RankingSession(project, clock=clock)
    ids = session.load_prompt(prompt["id"], random.Random(0))
    assert sorted(ids) == project.response_ids(prompt["id"]) and session.prompt_id == prompt["id"]
    with pytest.raises(ValueError, match=TIED):
        session.save([ids], "ann")
    clock.now += 2.0
    groups = [[ids[0]], [ids[1], ids[2]]]
    rid = run(project, session.save(groups, "ann"))
    saved = session.recent(prompts_only=True)[0]
    assert (saved["id"], saved["k"], saved["labeller"], saved["prompt_id"]) == (rid, 3, "ann", prompt["id"])
    assert order_text(saved["groups"]) == order_text([sorted(g) for g in groups])
    assert project.conn.execute("SELECT response_ms FROM rankings").fetchone()[0] == 2000
    assert project.ranked_prompt_ids() == {prompt["id"]} and len(project.comparisons()) == 3
    run(project, session.undo(rid))
    assert session.recent() == [] and project.comparisons() == [] and project.ranked_prompt_ids() == set()


def test_trajectory_rankings_have_no_prompt(project):
    ids = [project.add_item("trajectory", env_id="CartPole-v1", length=10) for _ in range(3)]
    session = RankingSession(project)
    session.load(ids)
    rid = run(project, session.save([[i] for i in ids], "bob"))
    assert session.recent()[0]["prompt_id"] is None and session.recent(prompts_only=True) == []
    assert project.ranking_groups(rid) == [[i] for i in ids]


def test_a_pair_labelled_again_after_an_undo_stays_out_until_its_own_label_lands(project):
    queue = clips(project)
    session = PairSession(project, "clip", clock=Clock())
    first_pair = show_next(session)
    first = session.label("left", "ann")
    undo = session.undo_last()  # before the first label is acked: shows the pair again
    session.show(undo.show)
    second = session.label("right", "ann")
    for step in (first, undo):
        result = run(project, step)
    session.labelled(first.given, first.given.cid)  # the first label's ack must not free the second's pair
    assert first_pair["id"] not in [p["id"] for p in session.upcoming(5)]
    session.labelled(second.given, run(project, second))
    assert [c["outcome"] for c in project.comparisons()] == ["right"] and result == first.given.cid
    assert queue[0] not in [p["id"] for p in session.upcoming(5)]


def test_an_undo_whose_write_failed_can_be_given_again(project):
    clips(project)
    session = PairSession(project, "clip", clock=Clock())
    show_next(session)
    step = label(session, "left")
    session.labelled(step.given, run(project, step))
    undo = session.undo_last()
    assert session.undo_last() is None  # nothing else to undo while that undo is on its way
    session.undo_failed(undo.given)  # e.g. the disk was full: the label still stands
    again = session.undo_last()
    assert again is not None and again.given is step.given
    run(project, again)
    assert project.comparisons() == [] and len(project.comparisons(include_deleted=True)) == 1
