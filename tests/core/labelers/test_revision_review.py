"""A person's review of the AI's revisions, Qt-free: undoing each decision, the counts, and the review session
(order, skip, progress "k of n", an edit checked before it is written, undo before the write is acked, a failed
write putting the revision back). Writes run at once, in order, on the same project (the app runs them in its
writer thread)."""

from __future__ import annotations

import json

import pytest

from rlhf_core.labelers import critique_revise as cr
from rlhf_core.labelers.session import RevisionSession
from rlhf_core.labelers.text_labels import add_correction


def run(project, step):
    """The app's writer, synchronously: run the write; roll back and re-raise when it fails."""
    try:
        return step.fn(project)
    except BaseException:
        project.rollback()
        raise


def ai_revisions(project, n: int = 3) -> tuple[list[int], list[int]]:
    """``n`` responses to one prompt, each revised once by an AI critic: (originals, revisions)."""
    pid = project.add_prompt("Say hi.")
    originals = [project.add_item("response", prompt_id=pid, text=f"hi {i}", model_id="m") for i in range(n)]
    ai = project.ensure_labeller("ai:critic:m", "ai")
    meta = {"method": cr.METHOD, "principle": "Be kind?", "critique": "Too curt.", "round": 1, "critic_model": "m"}
    revisions = [add_correction(project, o, f"Hello there! ({o})", ai, source="ai", meta={**meta, "original_id": o},
                                over=[o])[0] for o in originals]
    return originals, revisions


def live_comparisons(project, item_id: int) -> list[int]:
    return [r[0] for r in project.conn.execute(
        "SELECT id FROM comparisons WHERE deleted_at IS NULL AND (left_id = ? OR right_id = ?) ORDER BY id",
        [item_id, item_id])]


def test_each_review_undone_leaves_the_revision_waiting_as_before(project):
    originals, revisions = ai_revisions(project)
    person = project.ensure_labeller("me", "human")
    before = {r: live_comparisons(project, r) for r in revisions}
    assert cr.review_counts(project) == {"to_review": 3, "accepted": 0, "edited": 0, "rejected": 0}
    accepted = cr.review_revision(project, revisions[0], "accept", person)
    rejected = cr.review_revision(project, revisions[1], "reject", person, response_ms=700)
    edited = cr.review_revision(project, revisions[2], "edit", person, edited_text="Hi, how are you?")
    assert cr.review_counts(project) == {"to_review": 0, "accepted": 1, "edited": 1, "rejected": 1}
    mark = json.loads(project.get_item(revisions[1])["meta_json"])["review"]
    assert mark == {"decision": "reject", "labeller_id": person, "response_ms": 700}
    with pytest.raises(ValueError, match="accepted already"):
        cr.review_revision(project, revisions[0], "accept", person)  # a second acceptance would count twice

    assert cr.undo_review(project, revisions[0], accepted) == revisions[0]
    assert cr.undo_review(project, revisions[1], rejected) == revisions[1]
    assert cr.undo_review(project, revisions[2], edited) == revisions[2]
    assert [r["id"] for r in cr.revisions_to_review(project)] == revisions
    assert {r: live_comparisons(project, r) for r in revisions} == before  # the AI's pairs are back, no others
    assert not project.item_is_live(edited["correction_id"])
    assert all("review" not in json.loads(project.get_item(r)["meta_json"]) for r in revisions)
    assert cr.review_counts(project) == {"to_review": 3, "accepted": 0, "edited": 0, "rejected": 0}
    # undoing twice changes nothing and says why
    for rev, review, why in ((revisions[0], accepted, "undone already"), (revisions[1], rejected, "not rejected"),
                             (revisions[2], edited, "not rejected")):
        with pytest.raises(ValueError, match=why):
            cr.undo_review(project, rev, review)
    assert [r["id"] for r in cr.revisions_to_review(project)] == revisions


def test_the_session_reviews_in_order_with_skip_progress_and_undo(project):
    originals, revisions = ai_revisions(project)
    session = RevisionSession(project)

    def show_next():
        nxt = session.upcoming(1)
        session.show(nxt[0] if nxt else None)
        return session.current

    assert show_next()["id"] == revisions[0]
    assert session.current["revised"] == "hi 0" and session.current["principle"] == "Be kind?"
    p = session.progress()
    assert (p.position, p.total, p.accepted) == (1, 3, 0)
    session.skip()
    assert show_next()["id"] == revisions[1]
    accept = session.decide("accept", "ann")
    # not acked yet: the revision is left out of what comes next, and the counts already say 2 of 3
    assert show_next()["id"] == revisions[2] and session.progress().position == 2
    assert session.progress().total == 3
    for bad, why in (("  ", "empty"), (f"Hello there! ({originals[2]})", "unchanged"), ("hi 2", "the text the AI "
                                                                                                   "revised")):
        with pytest.raises(ValueError, match=why):
            session.decide("edit", "ann", bad)
    edit = session.decide("edit", "ann", "Hi! Nice to meet you.")
    # undo before either write ran: the writer runs them in order, so the edit is stored and then taken back
    undo = session.undo_last()
    assert undo.show["id"] == revisions[2] and undo.given is edit.given
    run(project, accept)
    session.reviewed(accept.given)
    run(project, edit)
    session.reviewed(edit.given)
    assert run(project, undo) == revisions[2]
    assert cr.review_counts(project) == {"to_review": 2, "accepted": 1, "edited": 0, "rejected": 0}
    session.show(undo.show)
    assert (session.progress().position, session.progress().total) == (2, 3)
    # the skipped one comes back once nothing else is waiting
    run(project, session.decide("reject", "ann"))
    assert show_next()["id"] == revisions[0]
    assert session.progress().rejected == 1
    # a write that fails stores nothing: its revision is waiting again and no undo takes it back
    failing = session.decide("accept", "ann")
    project.conn.execute("UPDATE items SET deleted_at = '2000-01-01' WHERE id = ?", [revisions[0]])
    with pytest.raises(ValueError, match="not a live AI revision"):
        run(project, failing)
    assert session.failed(failing.given)["id"] == revisions[0]
    assert session.given[-1].revision["id"] == revisions[2]  # the reject is the newest review left
