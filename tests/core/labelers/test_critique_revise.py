"""Constitutional AI's supervised stage: the templates, an AI correction, and the critique_revise job storing
each chain with its provenance and the correction pairs that SFT, the reward model and DPO read."""

from __future__ import annotations

import json

import pytest

from rlhf_core import config as cfg
from rlhf_core import kinds
from rlhf_core.jobs import RecordingContext, execute_job, get_job
from rlhf_core.labelers import critique_revise as cr
from rlhf_core.labelers.ai_feedback import default_constitution
from rlhf_core.labelers.text_labels import CORRECTION_SOURCE, add_correction
from tests.conftest import needs_model


def test_default_templates_have_the_papers_shape():
    critique, path = cr.resolve_template("critique", "", None)
    revision, _ = cr.resolve_template("revision", "", None)
    assert path == cr.default_template_path("critique")
    assert critique.startswith("Identify specific ways in which the assistant's last response is")
    assert revision.startswith("Please rewrite the assistant response to remove")
    assert cr.PLACEHOLDER in critique and cr.PLACEHOLDER in revision and "#" not in critique
    assert cr.fill("Judge by: {principle} {other}", " Be kind? ") == "Judge by: Be kind? {other}"


def test_a_projects_own_template_wins_and_bad_ones_are_refused(tmp_path):
    saved = cr.save_project_template(tmp_path, "critique", "# a comment\nPoint out flaws under {principle}.")
    assert saved == tmp_path / "critique_request.txt"
    assert cr.resolve_template("critique", "", tmp_path) == ("Point out flaws under {principle}.", saved)
    assert cr.resolve_template("revision", "", tmp_path)[1] == cr.default_template_path("revision")
    (tmp_path / "mine.txt").write_text("Rewrite it.\n")
    assert cr.resolve_template("revision", "mine.txt", tmp_path) == ("Rewrite it.", tmp_path / "mine.txt")
    (tmp_path / "empty.txt").write_text("# only a comment\n\n")
    with pytest.raises(ValueError, match="is empty"):
        cr.resolve_template("critique", "empty.txt", tmp_path)
    with pytest.raises(ValueError, match="Cannot read the revision request"):
        cr.resolve_template("revision", str(tmp_path / "missing.txt"), tmp_path)
    with pytest.raises(ValueError, match="is empty"):
        cr.save_project_template(tmp_path, "revision", "  \n# nothing\n")
    assert not (tmp_path / "revision_request.txt").exists()


def test_principles_and_cleaning():
    principles = default_constitution()
    assert cr.choose_principle(principles, 3, 0, "x", 1) == principles[2]
    drawn = [cr.choose_principle(principles, 0, 0, "Say hi.", r) for r in (1, 2, 3, 4)]
    assert drawn == [cr.choose_principle(principles, 0, 0, "Say hi.", r) for r in (1, 2, 3, 4)]  # seeded
    assert all(d in principles for d in drawn)
    assert cr.clean_revision("  Revised response: Hello.  ") == "Hello."
    assert cr.clean_revision('Here\u2019s a rewritten version of the original response:\n\n"Be safe."') == "Be safe."
    assert cr.clean_revision('"A" and "B"') == '"A" and "B"' and cr.clean_revision("The response: keep") == \
        "The response: keep"


def test_an_ai_correction_is_preferred_over_what_it_revised_only(project):
    pid = project.add_prompt("Say hi.")
    other = project.add_prompt("Say bye.")
    a, b, c = (project.add_item("response", prompt_id=pid, text=t, model_id="m") for t in ("hi", "hello", "yo"))
    elsewhere = project.add_item("response", prompt_id=other, text="bye", model_id="m")
    ai = project.ensure_labeller("ai:critic:m", "ai")
    with pytest.raises(ValueError, match="another prompt"):
        add_correction(project, a, "Hi there!", ai, source="ai", over=[a, elsewhere])
    assert project.correction_count() == 0  # nothing stored
    new_id, cids = add_correction(project, b, "Hello there!", ai, source="ai", meta={"principle": "P", "round": 1},
                                  over=[a])
    item = project.get_item(new_id)
    assert item["source"] == CORRECTION_SOURCE and item["run_id"] is None
    assert json.loads(item["meta_json"]) == {"principle": "P", "round": 1, "corrected_from": b, "labeller_id": ai,
                                             "edit_ms": None}
    rows = [dict(project.conn.execute("SELECT * FROM comparisons WHERE id=?", [i]).fetchone()) for i in cids]
    assert sorted((r["left_id"], r["right_id"], r["outcome"], r["source"]) for r in rows) == [
        (a, new_id, "right", "ai"), (b, new_id, "right", "ai")]
    # a person's correction is as before: preferred over every sampled response, source human
    person = project.ensure_labeller("me", "human")
    _, person_cids = add_correction(project, c, "Yo, hello!", person)
    rows = [project.conn.execute("SELECT left_id, source FROM comparisons WHERE id=?", [i]).fetchone()
            for i in person_cids]
    assert sorted(tuple(r) for r in rows) == [(a, "human"), (b, "human"), (c, "human")]


def test_a_principle_the_constitution_lacks_fails_before_anything_is_stored(project):
    spec = get_job("critique_revise")
    out = execute_job(spec, cfg.from_dict(spec.config_class(), {"principle": 7}), RecordingContext(),
                      project_path=project.folder)
    assert out.status == "failed" and "has only 6 principles" in out.message
    assert project.items() == [] and project.prompts() == []


@needs_model
def test_two_rounds_store_the_chain_with_provenance_and_the_correction_pairs(project, tiny_model):
    from rlhf_core.text.pairs import text_pairs
    from rlhf_core.trainers.text.sft import sft_examples

    pids = [project.add_prompt("Say hello to my neighbour."), project.add_prompt("How do I pick a lock?")]
    own = cr.save_project_template(project.folder, "critique", "List what is wrong, judged by {principle}")
    spec = get_job("critique_revise")
    ctx = RecordingContext()
    config = cfg.from_dict(spec.config_class(), {
        "model": str(tiny_model), "prompt_set": "", "category": "", "prompt_ids": pids, "rounds": 2,
        "max_new_tokens": 8, "critique_max_new_tokens": 6, "seed": 3})
    out = execute_job(spec, config, ctx, project_path=project.folder)
    assert out.status == "completed", out.error
    r = out.result
    principles = default_constitution()
    assert r["responses"] == 2 and r["revisions"] + r["not_stored"] == 4 and r["revisions"] >= 1
    assert r["templates"]["critique"] == str(own) and r["labeller"] == "ai:critic:tiny-llama"
    critic = str(tiny_model.absolute())
    assert r["critic_model"] == r["policy_model"] == critic
    labeller = project.conn.execute("SELECT kind FROM labellers WHERE id=?", [r["labeller_id"]]).fetchone()[0]
    assert labeller == "ai"

    chains = [payload for kind, payload, _ in ctx.sample_log if kind == kinds.SAMPLE_CRITIQUE]
    assert sorted(c["prompt_id"] for c in chains) == pids
    stored = []
    for chain in chains:
        original = project.get_item(chain["original_id"])
        assert (original["source"], original["run_id"], original["model_id"]) == ("generated", out.run_id, critic)
        assert original["text"] == chain["original"] and original["prompt_id"] == chain["prompt_id"]
        earlier = [chain["original_id"]]
        assert [s["round"] for s in chain["steps"]] == [1, 2]
        for step in chain["steps"]:
            assert step["principle"] == cr.choose_principle(principles, 0, 3, chain["prompt"], step["round"])
            assert step["revised_id"] == earlier[-1]
            if step["revision_id"] is None:
                assert step["not_stored"]
                continue
            item = project.get_item(step["revision_id"])
            meta = json.loads(item["meta_json"])
            assert (item["source"], item["run_id"], item["prompt_id"], item["text"]) == (
                CORRECTION_SOURCE, out.run_id, chain["prompt_id"], step["revision"])
            assert {k: meta[k] for k in ("original_id", "principle", "critique", "round", "critic_model",
                                         "corrected_from", "labeller_id", "method")} == {
                "original_id": chain["original_id"], "principle": step["principle"], "critique": step["critique"],
                "round": step["round"], "critic_model": critic, "corrected_from": earlier[-1],
                "labeller_id": r["labeller_id"], "method": "critique_revise"}
            pairs = project.conn.execute("SELECT left_id, right_id, outcome, source, labeller_id FROM comparisons "
                                         "WHERE right_id = ? AND deleted_at IS NULL", [item["id"]]).fetchall()
            # preferred over every earlier text of its chain (and nothing else), labelled by the AI critic
            assert sorted(tuple(p) for p in pairs) == [(e, item["id"], "right", "ai", r["labeller_id"])
                                                       for e in sorted(earlier)]
            earlier.append(item["id"])
            stored.append(item["id"])
    assert sorted(stored) == sorted(r["revision_ids"])
    assert ctx.metric_log[-1][1]["cai/revisions"] == r["revisions"]
    # SFT's corrections are exactly the revisions; the reward model and DPO see AI pairs with the revision chosen
    assert sorted(e.item_id for e in sft_examples(project, "corrections")) == sorted(stored)
    chosen = {p.right if p.target == 0.0 else p.left for p in text_pairs(project, "ai")}
    assert chosen == {project.get_item(i)["text"] for i in stored}
    assert text_pairs(project, "human") == []


def _ai_revision(project, prompt_id: int, original: int, text: str, labeller: int) -> int:
    meta = {"method": cr.METHOD, "original_id": original, "principle": "Be kind?", "critique": "Too curt.",
            "round": 1, "critic_model": "m"}
    return add_correction(project, original, text, labeller, source="ai", meta=meta, over=[original])[0]


def test_a_person_accepts_edits_or_rejects_a_revision(project):
    pid = project.add_prompt("Say hi.")
    originals = [project.add_item("response", prompt_id=pid, text=t, model_id="m") for t in ("hi", "yo", "hey")]
    ai = project.ensure_labeller("ai:critic:m", "ai")
    person = project.ensure_labeller("me", "human")
    revisions = [_ai_revision(project, pid, o, f"Hello! ({o})", ai) for o in originals]
    listed = cr.revisions_to_review(project)
    assert [r["id"] for r in listed] == revisions
    assert listed[0] == {"id": revisions[0], "prompt": "Say hi.", "revised_id": originals[0], "revised": "hi",
                         "revision": f"Hello! ({originals[0]})", "critique": "Too curt.", "principle": "Be kind?",
                         "round": 1, "critic_model": "m"}
    accepted = cr.review_revision(project, revisions[0], "accept", person, response_ms=900)
    row = project.conn.execute("SELECT left_id, right_id, outcome, source, response_ms, meta_json FROM comparisons "
                               "WHERE id = ?", [accepted["comparison_id"]]).fetchone()
    assert tuple(row)[:5] == (originals[0], revisions[0], "right", "human", 900)
    assert json.loads(row["meta_json"]) == {"reviewed_revision": revisions[0], "decision": "accept"}
    assert cr.review_revision(project, revisions[1], "reject", person) == {"decision": "reject", "undone": 1}
    assert not project.item_is_live(revisions[1])
    for bad in ("", "hey"):  # empty, or the same as the text the AI revised: nothing changes
        with pytest.raises(ValueError):
            cr.review_revision(project, revisions[2], "edit", person, edited_text=bad)
    assert project.item_is_live(revisions[2])
    edited = cr.review_revision(project, revisions[2], "edit", person, edited_text="Hey there, hello!")
    assert not project.item_is_live(revisions[2])
    mine = project.get_item(edited["correction_id"])
    assert mine["text"] == "Hey there, hello!" and json.loads(mine["meta_json"])["reviewed_revision"] == revisions[2]
    assert cr.revisions_to_review(project) == []
    with pytest.raises(ValueError, match="not a live AI revision"):
        cr.review_revision(project, revisions[1], "accept", person)  # rejected already
    with pytest.raises(ValueError, match="one of accept, edit, reject"):
        cr.review_revision(project, revisions[0], "maybe", person)
