"""Text labels: queued pairs of responses to the same prompt, and preference with correction."""

from __future__ import annotations

import json

import pytest

from rlhf_core.labelers.text_labels import add_correction, correction_of, queue_response_pairs, undo_correction


def responses(project, texts, prompt="Explain RLHF in one sentence."):
    pid = project.add_prompt(prompt)
    return pid, [project.add_item("response", prompt_id=pid, text=t, model_id="m", source="generated")
                 for t in texts]


def pairs_of(project, qids):
    rows = project.conn.execute(
        f"SELECT left_id, right_id FROM pair_queue WHERE id IN ({','.join('?' * len(qids))})", qids)
    return {frozenset(r) for r in rows}


def test_queue_all_pairs_per_prompt_skipping_queued_and_labelled(project):
    p1, r1 = responses(project, ["a", "b", "c"])
    _, r2 = responses(project, ["only one"], prompt="Another prompt")
    p3, r3 = responses(project, ["x", "y"], prompt="Third")
    q = queue_response_pairs(project)
    assert pairs_of(project, q) == {frozenset(p) for p in [(r1[0], r1[1]), (r1[0], r1[2]), (r1[1], r1[2]),
                                                           (r3[0], r3[1])]}
    reasons = [json.loads(r[0]) for r in project.conn.execute("SELECT reason_json FROM pair_queue")]
    assert {r["prompt_id"] for r in reasons} == {p1, p3} and {r["selection"] for r in reasons} == {"all"}
    assert queue_response_pairs(project) == []  # all waiting already
    # label one (in the other orientation), undo nothing: that pair stays done
    first = project.pending_pairs(1)[0]
    ann = project.ensure_labeller("ann")
    project.add_comparison(first["right_id"], first["left_id"], "left", labeller_id=ann, queue_id=first["id"])
    assert queue_response_pairs(project) == []
    # a second labeller gets the labelled pair again (for agreement), not the waiting ones
    again = queue_response_pairs(project, labeller_id=project.ensure_labeller("bob"))
    assert pairs_of(project, again) == {frozenset((first["left_id"], first["right_id"]))}


def test_queue_random_subset_is_deterministic_and_limited_to_prompts(project):
    p1, r1 = responses(project, [f"answer {i}" for i in range(5)])  # 10 pairs
    p2, _ = responses(project, ["x", "y", "z"], prompt="Other")
    q = queue_response_pairs(project, prompt_ids=[p1], per_prompt=4, seed=3)
    assert len(q) == 4 and all(set(p) <= set(r1) for p in pairs_of(project, q))
    picked = pairs_of(project, q)
    project.conn.execute("DELETE FROM pair_queue")
    assert pairs_of(project, queue_response_pairs(project, prompt_ids=[p1], per_prompt=4, seed=3)) == picked
    assert len(queue_response_pairs(project, prompt_ids=[p1])) == 6  # the rest
    # the side each response is shown on is random, not the generation order
    assert {r[0] for r in project.conn.execute("SELECT left_id < right_id FROM pair_queue")} == {0, 1}
    with pytest.raises(ValueError):
        queue_response_pairs(project, per_prompt=-1)


def test_correction_is_preferred_over_every_sampled_response(project):
    pid, r = responses(project, ["The sky is green.", "Paris is in Spain.", "2 + 2 = 5"])
    ann = project.ensure_labeller("ann")
    new_id, cids = add_correction(project, r[1], "Paris is in France.", ann, response_ms=4200)
    item = project.get_item(new_id)
    assert item["kind"] == "response" and item["source"] == "correction" and item["prompt_id"] == pid
    assert item["text"] == "Paris is in France."
    assert json.loads(item["meta_json"])["corrected_from"] == r[1]
    comps = project.comparisons()
    assert [c["id"] for c in comps] == cids and len(cids) == 3  # 3 samples + 1 correction -> 3 pairs
    assert {(c["left_id"], c["right_id"], c["outcome"]) for c in comps} == {(x, new_id, "right") for x in r}
    assert {c["labeller_id"] for c in comps} == {ann} and {c["response_ms"] for c in comps} == {4200}
    assert {c["source"] for c in comps} == {"human"} and correction_of(project, cids[0]) == new_id
    # a second correction is compared with the samples only, not with the first correction
    new2, cids2 = add_correction(project, r[0], "The sky is blue.", ann)
    assert len(cids2) == 3
    assert undo_correction(project, new_id) == 3
    assert project.get_item(new_id)["deleted_at"] is not None
    assert len(project.comparisons()) == 3 and len(project.comparisons(include_deleted=True)) == 6


@pytest.mark.parametrize("text, message", [("   \n", "empty"), ("  Paris is in Spain.\n", "same as the original")])
def test_empty_or_unchanged_correction_stores_nothing(project, text, message):
    _, r = responses(project, ["The sky is green.", "Paris is in Spain."])
    ann = project.ensure_labeller("ann")
    before = project.counts()
    with pytest.raises(ValueError, match=message):
        add_correction(project, r[1], text, ann)
    assert project.counts() == before


def test_correction_is_one_transaction(project):
    _, r = responses(project, ["a", "b"])
    before = project.counts()
    with pytest.raises(ValueError):
        add_correction(project, r[0], "better", 999)  # no such labeller: the comparisons fail
    assert project.counts() == before  # ... and the new item was rolled back too
    with pytest.raises(ValueError, match="no response"):
        add_correction(project, 12345, "x", 1)


def test_word_diff_spans():
    from rlhf_core.labelers.text_labels import word_diff

    a = "The cat sat on the mat."
    b = "The dog sat on the red mat."
    sa, sb = word_diff(a, b)
    assert [a[s:e] for s, e in sa] == ["cat"]
    assert [b[s:e] for s, e in sb] == ["dog", "red"]
    sa, sb = word_diff("same words here", "same  words\nhere")
    assert sa == [] and sb == []
    sa, sb = word_diff("one two three", "")
    assert sa == [(0, 13)] and sb == []
