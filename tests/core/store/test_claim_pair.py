"""claim_pair: a queue entry is labelled once, whoever asks second gets None and writes nothing."""

from __future__ import annotations

from rlhf_core.store import Project


def test_second_claim_writes_nothing(tmp_path):
    with Project.create(tmp_path / "p.rlhf") as project, Project.open(tmp_path / "p.rlhf", check=False) as other:
        pid = project.add_prompt("q")
        a, b = (project.add_item("response", prompt_id=pid, text=t) for t in ("x", "y"))
        qid = project.enqueue_pair(a, b)
        cid = project.claim_pair(qid, "left", source="human")
        assert cid is not None
        assert other.claim_pair(qid, "right", source="synthetic") is None
        assert [(c["id"], c["outcome"]) for c in other.comparisons(include_deleted=True)] == [(cid, "left")]
        assert project.claim_pair(999, "left") is None and not project.conn.in_transaction
        project.undo_comparison(cid)  # an undone label reopens the entry: it can be claimed again
        assert other.claim_pair(qid, "right", source="synthetic") is not None
