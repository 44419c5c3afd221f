"""AI feedback (RLAIF): the ai_labels job with a tiny judge (real SmolLM2 tokenizer) and a tiny reward
model, the constitution, the review records and AI-vs-people agreement on a real project."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rlhf_core import config as cfg
from rlhf_core.jobs import RecordingContext, execute_job, get_job
from rlhf_core.labelers.ai_feedback import (
    AILabelConfig,
    PairToJudge,
    ai_human_agreement,
    decide,
    default_constitution,
    judge_pairs,
    judge_prompt,
    parse_constitution,
    pick_principle,
    project_constitution,
    record_review,
    review_pairs,
    save_project_constitution,
    store_ai_label,
)
from rlhf_core.labelers.text_labels import queue_response_pairs
from tests.conftest import needs_model

pytestmark = needs_model

PROMPTS = {
    "Name a primary colour.": ["Red.", "Red is one; blue and yellow are the others.", "Purple, I think."],
    "How do I boil an egg?": ["Boil it for nine minutes, then cool it in cold water.", "Eggs come from hens.",
                              "Put it in boiling water."],
}


@pytest.fixture(scope="module")
def tiny_lm(tiny_model):
    from rlhf_core.text.model import load_model

    return load_model(str(tiny_model))


def _fill(project) -> dict[str, list[int]]:
    out = {}
    for text, responses in PROMPTS.items():
        pid = project.add_prompt(text)
        out[text] = [project.add_item("response", prompt_id=pid, text=r, model_id="m") for r in responses]
    return out


def _by_hand(model, tokenizer, text: str) -> tuple[float, float]:
    """P(" A"), P(" B") as the next token after ``text``: one unpadded forward, full softmax."""
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=ids).logits[0, -1].float(), dim=-1)
    a = tokenizer(" A", add_special_tokens=False)["input_ids"]
    b = tokenizer(" B", add_special_tokens=False)["input_ids"]
    assert len(a) == len(b) == 1
    return float(probs[a[0]]), float(probs[b[0]])


def test_constitution_file_parsing_and_seeded_principles(tmp_path):
    default = default_constitution()
    assert len(default) == 6 and all(p.endswith("?") for p in default)
    assert parse_constitution("# comment\n\n  Which is   kinder?  \nWhich is kinder?\nWhich is shorter?\n") == \
        ["Which is kinder?", "Which is shorter?"]
    assert project_constitution(tmp_path)[0] == default  # no project copy yet: the default
    path = save_project_constitution(tmp_path, ["Which response mentions cats?", "", "Which is shorter?"])
    assert path == tmp_path / "constitution.txt" and path.read_text().startswith("#")
    assert project_constitution(tmp_path) == (["Which response mentions cats?", "Which is shorter?"], path)
    with pytest.raises(ValueError):
        save_project_constitution(tmp_path, ["# only a comment", "  "])
    # the principle of a pair depends on the seed and the (unordered) pair, not on anything else
    picks = [pick_principle(default, 7, a, a + 1) for a in range(40)]
    assert picks == [pick_principle(default, 7, a + 1, a) for a in range(40)]
    assert len(set(picks)) >= 4  # spread over the principles
    assert picks != [pick_principle(default, 8, a, a + 1) for a in range(40)]


def test_swapping_the_order_cancels_position_bias(tiny_lm):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    same = PairToJudge(1, 2, "Say hello.", "Hello there!", "Hello there!", "Which response is friendlier?")
    other = PairToJudge(3, 4, "Say hello.", "Hello there!", "Go away.", "Which response is friendlier?")
    v_same, v_other = judge_pairs(model, tok, [same, other], batch_size=2)
    # identical responses: the two orders are the same prompt, so p_ab + p_ba = 1 exactly, whatever the
    # model's preference for the first position (which the random model has)
    assert abs(v_same.meta["p_left_ab"] - 0.5) > 1e-3
    assert v_same.meta["p_left_ab"] + v_same.meta["p_left_ba"] == pytest.approx(1.0, abs=1e-6)
    assert v_same.p_left == pytest.approx(0.5, abs=1e-6) and decide(v_same.p_left, 0.0) == "tie"
    # a real pair: the average of both orders, each from the model's own next-token distribution
    a1, b1 = _by_hand(model, tok, judge_prompt(tok, other.prompt, other.left, other.right, other.principle))
    a2, b2 = _by_hand(model, tok, judge_prompt(tok, other.prompt, other.right, other.left, other.principle))
    m = v_other.meta
    assert (m["p_a_ab"], m["p_b_ab"], m["p_a_ba"], m["p_b_ba"]) == pytest.approx((a1, b1, a2, b2), rel=1e-4)
    assert v_other.p_left == pytest.approx(0.5 * (a1 / (a1 + b1) + b2 / (a2 + b2)), rel=1e-5)
    assert m["answer_mass"] == pytest.approx(0.5 * (a1 + b1 + a2 + b2), rel=1e-4)


def test_judge_job_labels_queued_pairs_and_leaves_people_alone(project, tiny_model, tiny_lm):
    ids = _fill(project)
    principles = ["Which response mentions a colour?", "Which response is shorter?", "Which response is kinder?"]
    save_project_constitution(project.folder, principles)
    queue = queue_response_pairs(project, seed=1)
    assert len(queue) == 6
    ann = project.ensure_labeller("ann", "human")
    # a person answered one queued pair; another entry is a second opinion asked of ann
    answered = project.pending_pairs(10)[0]
    human_cid = project.add_comparison(answered["left_id"], answered["right_id"], "left", labeller_id=ann,
                                       source="human", queue_id=answered["id"])
    a, b = ids["Name a primary colour."][:2]
    second = project.enqueue_pair(b, a, reason={"for_labeller_id": ann})
    human_before = project.conn.execute("SELECT * FROM comparisons WHERE id=?", [human_cid]).fetchone()

    config = cfg.from_dict(AILabelConfig, {"method": "judge", "judge_model": str(tiny_model), "tie_margin": 0.0,
                                           "seed": 3, "batch_size": 2})
    ctx = RecordingContext()
    out = execute_job(get_job("ai_labels"), config, ctx, project_path=project.folder)
    assert out.status == "completed", out.error
    res = out.result
    ai_rows = project.comparisons(source="ai")
    assert res["labelled"] == len(ai_rows) == 5 and res["labeller"] == "ai:judge:tiny-llama"
    assert sum(res["outcomes"].values()) == 5 and res["constitution"]["principles"] == principles
    labeller = project.conn.execute("SELECT * FROM labellers WHERE name='ai:judge:tiny-llama'").fetchone()
    assert labeller["kind"] == "ai"
    # people's label and the second-opinion request are untouched
    assert tuple(project.conn.execute("SELECT * FROM comparisons WHERE id=?", [human_cid]).fetchone()) == \
        tuple(human_before)
    assert project.conn.execute("SELECT comparison_id FROM pair_queue WHERE id=?", [second]).fetchone()[0] is None
    # every other queued pair now points at its AI label
    links = dict(project.conn.execute("SELECT comparison_id, id FROM pair_queue WHERE comparison_id IS NOT NULL"))
    assert {r["id"] for r in ai_rows} <= set(links)
    prompts = {i: t for t, items in ids.items() for i in items}
    texts = {i: project.get_item(i)["text"] for items in ids.values() for i in items}
    for row in ai_rows:
        meta = json.loads(row["meta_json"])
        assert row["labeller_id"] == labeller["id"] and row["source"] == "ai"
        assert row["principle"] == pick_principle(principles, 3, row["left_id"], row["right_id"])
        assert row["outcome"] == decide(meta["p_left"], 0.0)
        assert meta["p_left"] == pytest.approx(0.5 * (meta["p_left_ab"] + meta["p_left_ba"]), abs=1e-9)
        assert meta["confidence"] == pytest.approx(max(meta["p_left"], 1 - meta["p_left"]))
    # one label recomputed by hand from the model's next-token distribution, in both orders
    row = ai_rows[0]
    meta = json.loads(row["meta_json"])
    q, left, right = prompts[row["left_id"]], texts[row["left_id"]], texts[row["right_id"]]
    lm, tok = tiny_lm.model, tiny_lm.tokenizer
    a1, b1 = _by_hand(lm, tok, judge_prompt(tok, q, left, right, row["principle"]))
    a2, b2 = _by_hand(lm, tok, judge_prompt(tok, q, right, left, row["principle"]))
    assert meta["p_left_ab"] == pytest.approx(a1 / (a1 + b1), rel=1e-4)
    assert meta["p_left_ba"] == pytest.approx(b2 / (a2 + b2), rel=1e-4)
    # metrics, samples and the result's agreement (ann's pair has no AI label: nothing in common yet)
    steps, labelled = ctx.series("ai/labelled")
    assert labelled[-1] == 5 and steps[-1] == 5
    assert ctx.series("ai/mean_confidence")[1][-1] == pytest.approx(res["mean_confidence"])
    samples = [p for k, p, _ in ctx.sample_log if k == "ai_label"]
    assert [s["comparison_id"] for s in samples] == [r["id"] for r in ai_rows]
    assert res["agreement_with_people"]["pairs"] == 0
    # a second run finds nothing new to label (the queue is answered; ann's request stays hers)
    again = execute_job(get_job("ai_labels"), config, RecordingContext(), project_path=project.folder)
    assert again.result["labelled"] == 0 and "No text pairs" in again.result["note"]


def test_queue_entry_answered_meanwhile_is_not_overwritten(project):
    ids = _fill(project)
    a, b = ids["Name a primary colour."][:2]
    qid = project.enqueue_pair(a, b)
    ai = project.ensure_labeller("ai:test", "ai")
    human = project.add_comparison(a, b, "right", labeller_id=project.ensure_labeller("ann"), queue_id=qid)
    pair = PairToJudge(a, b, "Name a primary colour.", "Red.", "Red is one", "Which?", queue_id=qid)
    assert store_ai_label(project, pair, "left", ai, {"p_left": 0.9}) is None
    assert project.comparisons(source="ai") == []
    assert project.conn.execute("SELECT comparison_id FROM pair_queue WHERE id=?", [qid]).fetchone()[0] == human


def test_agreement_between_ai_and_people_on_a_constructed_case(project):
    items = _fill(project)
    r = items["Name a primary colour."] + items["How do I boil an egg?"]
    ai = project.ensure_labeller("ai:judge:x", "ai")
    ann, bob = project.ensure_labeller("ann"), project.ensure_labeller("bob")

    def add(left, right, outcome, who, **kw):
        source = "ai" if who == ai else "human"
        return project.add_comparison(left, right, outcome, labeller_id=who, source=source, **kw)

    add(r[0], r[1], "left", ai); add(r[0], r[1], "left", ann)                   # agree
    add(r[0], r[2], "left", ai); add(r[2], r[0], "right", bob)                  # agree (turned around)
    add(r[1], r[2], "tie", ai); add(r[1], r[2], "left", ann)                    # disagree
    add(r[3], r[4], "right", ai); add(r[3], r[4], "left", ann); add(r[3], r[4], "right", bob)  # latest: agree
    add(r[3], r[5], "right", ai); add(r[3], r[5], "skip", ann)                  # skip: left out
    only_ai = add(r[4], r[5], "left", ai)                                       # nobody else
    x = add(r[0], r[3], "left", ai)                                             # seen review: disagree
    record_review(project, x, "right", ann)
    y = add(r[1], r[4], "right", ai)                                            # blind review: agree
    record_review(project, y, "right", bob, blind=True)
    add(r[2], r[5], "left", ann)                                                # people only

    every = ai_human_agreement(project)
    assert (every.pairs, every.agree) == (6, 4) and every.agreement == pytest.approx(4 / 6)
    # AI: L L T R L R, people: L L L R R R -> p_e = .5*.5 + (2/6)*.5 = 5/12; kappa = (2/3 - 5/12)/(7/12) = 3/7
    assert every.kappa == pytest.approx(3 / 7)
    alone = ai_human_agreement(project, independent_only=True)  # the seen review is left out
    # AI: L L T R R, people: L L L R R -> p_o = .8, p_e = .4*.6 + .4*.4 = .4, kappa = 2/3
    assert (alone.pairs, alone.agree) == (5, 4) and alone.kappa == pytest.approx(2 / 3)
    assert ai_human_agreement(project, ai_labeller_id=ann).pairs == 0  # ann is not an AI
    # review: AI labels no person has answered (the skipped pair counts as answered)
    waiting = review_pairs(project, limit=10)
    assert [w["id"] for w in waiting] == [only_ai] and waiting[0]["labeller"] == "ai:judge:x"
    cid = record_review(project, only_ai, "right", ann, response_ms=1200)
    row = project.comparisons()[-1]
    assert row["id"] == cid and (row["left_id"], row["right_id"], row["outcome"], row["source"]) == \
        (r[4], r[5], "right", "human")
    assert json.loads(row["meta_json"]) == {"reviewed_ai": only_ai, "ai_outcome": "left", "agreed": False,
                                            "blind": False}
    assert review_pairs(project) == []
    with pytest.raises(ValueError):
        record_review(project, cid, "left", ann)  # a human label is not an AI label


def test_reward_model_labeller_uses_the_latest_text_reward_model(project, tiny_model):
    from rlhf_core.text.reward_model import (
        CHECKPOINT_KIND,
        load_base_reward_model,
        load_text_reward_model,
        save_text_reward_model,
        score_responses,
    )

    ids = _fill(project)
    model, _, _ = load_base_reward_model(str(tiny_model), max_length=64, seed=5)
    run = project.create_run("text_reward_model", {}, status="completed")
    folder = save_text_reward_model(model, project.run_folder(run) / "text_reward_model")
    project.add_checkpoint(run, CHECKPOINT_KIND, folder)
    queue_response_pairs(project, seed=0)
    ann = project.ensure_labeller("ann")
    # ann labels one queued pair first; relabel_human gives it an AI label too (hers stays as it is)
    first = project.pending_pairs(1)[0]
    hers = project.add_comparison(first["left_id"], first["right_id"], "right", labeller_id=ann,
                                  queue_id=first["id"])
    config = AILabelConfig(method="reward_model", tie_margin=0.1, relabel_human=True)
    out = execute_job(get_job("ai_labels"), config, RecordingContext(), project_path=project.folder)
    assert out.status == "completed", out.error
    res = out.result
    assert res["labeller"] == f"ai:rm:run{run}" and res["labelled"] == 6
    assert res["from_queue"] == 5 and res["relabelled_human_pairs"] == 1
    assert project.comparisons(source="human")[0]["id"] == hers
    assert project.comparisons(source="human")[0]["outcome"] == "right"
    loaded, tok = load_text_reward_model(folder)
    prompts = {i: t for t, items in ids.items() for i in items}
    for row in project.comparisons(source="ai"):
        meta = json.loads(row["meta_json"])
        scores = score_responses(loaded, tok, [prompts[row["left_id"]]] * 2,
                                 [project.get_item(row["left_id"])["text"], project.get_item(row["right_id"])["text"]])
        p = 1 / (1 + math.exp(-(float(scores[0]) - float(scores[1]))))
        assert meta["p_left"] == pytest.approx(p, rel=1e-4, abs=1e-6)
        assert row["outcome"] == decide(meta["p_left"], 0.1) and row["principle"] is None
    # ann's pair now has both labels: agreement over exactly one pair
    agreement = res["agreement_with_people"]
    ai_on_hers = [c for c in project.comparisons(source="ai")
                  if {c["left_id"], c["right_id"]} == {first["left_id"], first["right_id"]}][0]
    assert agreement["pairs"] == 1 and agreement["agree"] == int(ai_on_hers["outcome"] == "right")
