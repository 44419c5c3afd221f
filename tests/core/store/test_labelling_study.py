"""A labelling study in the store: versioned guidelines, the overlap setting (a fraction of newly queued
pairs wants several labellers), answers routed per labeller (blind, once each), and claims that stay
race-free when labellers answer the same entry at once from their own connections."""

from __future__ import annotations

import threading

import pytest

from rlhf_core.store import Project
from rlhf_core.store.project import overlap_chosen


def responses(project, n=2):
    pid = project.add_prompt("q")
    return [project.add_item("response", prompt_id=pid, text=f"answer {i}") for i in range(n)]


def answers(project, qid):
    return [tuple(r) for r in project.conn.execute("SELECT labeller_id, comparison_id FROM queue_answers "
                                                   "WHERE queue_id = ? ORDER BY comparison_id", [qid])]


def test_guidelines_are_versioned_and_kept(project):
    assert project.guidelines() is None and project.guideline_version() is None
    assert project.save_guidelines("# Better\nThe more helpful answer.") == 1
    assert project.save_guidelines("# Better\nThe more helpful answer.") == 1  # unchanged: no new version
    assert project.save_guidelines("# Better\nThe more helpful **and** honest answer.") == 2
    assert project.guideline_version() == 2 and "honest" in project.guidelines()["text"]
    assert project.guidelines(1)["text"] == "# Better\nThe more helpful answer."
    assert [v["version"] for v in project.guideline_versions()] == [2, 1]
    for bad in ("", "   \n", "x" * 200_001):
        with pytest.raises(ValueError, match="guidelines"):
            project.save_guidelines(bad)
    assert project.guideline_version() == 2 and not project.conn.in_transaction


def test_labels_and_rankings_record_the_guideline_version(project):
    a, b, c = responses(project, 3)
    qid = project.enqueue_pair(a, b)
    cid = project.claim_pair(qid, "left", labeller_id=project.ensure_labeller("ann"), guideline_version=1)
    rid = project.add_ranking([[a], [b, c]], labeller_id=project.ensure_labeller("bob"), guideline_version=2)
    rows = {r["id"]: r for r in project.comparisons()}
    assert rows[cid]["guideline_version"] == 1
    assert {r["guideline_version"] for r in rows.values() if r["ranking_id"] == rid} == {2}
    assert project.conn.execute("SELECT guideline_version FROM rankings WHERE id = ?", [rid]).fetchone()[0] == 2
    # a change keeps the version unless it is given under another one
    assert project.comparisons()[0]["guideline_version"] == 1
    new = project.edit_comparison(cid, "right")
    newer = project.edit_comparison(new, "tie", guideline_version=3)
    versions = {r["id"]: r["guideline_version"] for r in project.comparisons(include_deleted=True)}
    assert (versions[new], versions[newer]) == (1, 3)


def test_overlap_setting_is_checked_and_sets_answers_wanted_on_that_fraction(project):
    assert project.overlap() == (0.0, 2)
    for fraction, answers in ((-0.1, 2), (1.5, 2), (0.5, 1), (0.5, 11), (0.5, 2.5), ("lots", 2)):
        with pytest.raises(ValueError, match="overlap|labellers"):
            project.set_overlap(fraction, answers)
    assert project.overlap() == (0.0, 2)
    ids = responses(project, 21)  # 210 possible pairs
    pairs = [(ids[i], ids[j]) for i in range(21) for j in range(i + 1, 21)]

    def queue(n):
        with project.db.atomic():
            qids = [project.enqueue_pair(a, b) for a, b in pairs[:n]]
        del pairs[:n]
        return [r[0] for r in project.conn.execute(
            f"SELECT answers_wanted FROM pair_queue WHERE id IN ({','.join('?' * len(qids))}) ORDER BY id", qids)]

    assert set(queue(20)) == {1}  # no overlap: one labeller each
    project.set_overlap(0.25, 2)
    assert project.overlap() == (0.25, 2)
    wanted = queue(100)
    assert set(wanted) == {1, 2} and 23 <= wanted.count(2) <= 27  # about a quarter, spread out
    assert max(len(run) for run in "".join(map(str, wanted)).split("2")) <= 8  # no long run without overlap
    project.set_overlap(1.0, 3)
    assert set(queue(30)) == {3}
    project.set_overlap(0.0)
    assert set(queue(20)) == {1}
    # the rule: a low-discrepancy sequence over the queue ids
    assert sum(overlap_chosen(i, 0.1) for i in range(1, 1001)) in range(97, 104)
    assert not any(overlap_chosen(i, 0.0) for i in range(1, 100))
    qid = project.enqueue_pair(*pairs[0], answers_wanted=2)  # a caller may ask for it explicitly
    assert project.conn.execute("SELECT answers_wanted FROM pair_queue WHERE id = ?", [qid]).fetchone()[0] == 2


def test_an_overlap_entry_goes_to_each_labeller_once_and_blind(project):
    a, b = responses(project)
    ann, bob, cat = (project.ensure_labeller(n) for n in ("ann", "bob", "cat"))
    qid = project.enqueue_pair(a, b, answers_wanted=2)
    first = project.claim_pair(qid, "left", labeller_id=ann, source="human")
    assert first is not None
    # ann is done with it; bob still has it; the header counts follow
    assert project.pending_pairs_of("response", labeller_id=ann) == []
    assert [p["id"] for p in project.pending_pairs_of("response", labeller_id=bob)] == [qid]
    assert project.waiting_count("response", labeller_id=ann) == 0
    assert project.waiting_count("response", labeller_id=bob) == 1 and project.counts()["queued_pairs"] == 1
    assert project.claim_pair(qid, "right", labeller_id=ann) is None  # not twice
    second = project.claim_pair(qid, "right", labeller_id=bob, source="human")
    assert second is not None and project.claim_pair(qid, "tie", labeller_id=cat) is None  # it had its two
    assert project.waiting_count("response", labeller_id=cat) == 0 and project.counts()["queued_pairs"] == 0
    assert answers(project, qid) == [(ann, first), (bob, second)]
    assert project.conn.execute("SELECT comparison_id FROM pair_queue WHERE id = ?", [qid]).fetchone()[0] == first
    assert project.answered_count("response") == 2
    # recent labels say which entry wants several answers (the views hide the others' ones)
    assert {r["id"]: r["answers_wanted"] for r in project.recent_labels("response", 5)} == {first: 2, second: 2}
    # a changed answer still answers the entry; an undone one reopens it for its labeller only
    changed = project.edit_comparison(second, "tie")
    assert answers(project, qid) == [(ann, first), (bob, changed)]
    project.undo_comparison(first)
    assert answers(project, qid) == [(bob, changed)]
    assert project.conn.execute("SELECT comparison_id FROM pair_queue WHERE id = ?", [qid]).fetchone()[0] == changed
    assert project.pending_pairs_of("response", labeller_id=bob) == []
    assert project.reopened_pair(first, labeller_id=ann)["id"] == qid
    assert project.reopened_pair(first, labeller_id=bob) is None
    assert project.claim_pair(qid, "left", labeller_id=cat) is not None  # the free place is anyone's


def test_one_answer_entries_behave_as_before(project):
    a, b = responses(project)
    ann, bob = project.ensure_labeller("ann"), project.ensure_labeller("bob")
    qid = project.enqueue_pair(a, b)
    cid = project.claim_pair(qid, "left", labeller_id=ann)
    assert project.pending_pairs_of("response", labeller_id=bob) == [] and project.pending_pairs(10) == []
    assert project.claim_pair(qid, "right", labeller_id=bob) is None
    assert project.recent_labels("response", 5)[0]["answers_wanted"] == 1
    project.undo_comparison(cid)
    assert project.reopened_pair(cid)["id"] == qid and [p["id"] for p in project.pending_pairs(10)] == [qid]
    assert answers(project, qid) == []


def _claim_at_once(folder, qid, labellers) -> list[int | None]:
    """Each labeller claims ``qid`` from a thread with its own connection, all released together."""
    barrier = threading.Barrier(len(labellers))
    results: list[int | None] = [None] * len(labellers)
    errors: list[BaseException] = []

    def claim(i, who):
        try:
            with Project.open(folder, check=False) as mine:
                barrier.wait(timeout=10)
                results[i] = mine.claim_pair(qid, "left", labeller_id=who, source="human")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(i, who)) for i, who in enumerate(labellers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return results


def test_labellers_claiming_at_once_never_give_double_answers(project):
    a, b = responses(project)
    ann, bob, cat = (project.ensure_labeller(n) for n in ("ann", "bob", "cat"))
    wants_two = project.enqueue_pair(a, b, answers_wanted=2)
    got = _claim_at_once(project.folder, wants_two, [ann, bob, cat, ann])
    assert sum(r is not None for r in got) == 2
    rows = answers(project, wants_two)
    assert len(rows) == 2 and len({who for who, _ in rows}) == 2
    assert len(project.comparisons()) == 2  # the refused claims wrote nothing
    once = project.enqueue_pair(b, a, answers_wanted=2)
    got = _claim_at_once(project.folder, once, [bob, bob, bob])  # one labeller in three windows
    assert sum(r is not None for r in got) == 1 and [w for w, _ in answers(project, once)] == [bob]
