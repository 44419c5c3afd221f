"""Text-policy evaluation: majority-vote rules by hand, cons@k / pass@k / pass@1 and the win rate on a
tiny Llama (real SmolLM2 tokenizer), the text_eval job and CLI on a real project, bad inputs."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch

from rlhf_core import config as cfg
from rlhf_core.jobs import RecordingContext, execute_job, get_job
from rlhf_core.analysis.text_evaluation import TextEvalConfig, win_rate_from_scores, win_rate_vs_reference
from rlhf_core.text.gold_eval import consensus_at_k, consensus_from_completions, majority_vote, vote_key
from tests.conftest import needs_model



def A(x: str) -> str:
    return f"<think> ... </think> <answer>{x}</answer>"


# ------------------------------------------------------------------------------- voting by hand
def test_majority_vote_rules():
    # numbers vote by value: "7", "7.0" and "7 apples" are one candidate, written as first seen
    assert majority_vote([" 7 apples ", "8", "7.0"]) == (" 7 apples ", 2)
    # a tie goes to the answer seen first (8 before 7, two votes each)
    assert majority_vote(["8", "7", "7", "8"]) == ("8", 2)
    assert majority_vote(["7", "8", "8", "7"]) == ("7", 2)
    # abstentions (no answer, a blank answer) do not vote; one real vote wins
    assert majority_vote([None, "  ", "5"]) == ("5", 1)
    assert majority_vote([None, None, "3", "4", None, "4"]) == ("4", 2)
    # all abstain -> no answer
    assert majority_vote([None, "", None]) == (None, 0)
    assert majority_vote([]) == (None, 0)
    # text answers compare ignoring case and spacing
    assert majority_vote(["Paris", " paris ", "Rome"]) == ("Paris", 2)
    assert vote_key("7") == vote_key("<b>7.0</b>") == vote_key("1,2 and 7") and vote_key(" ") is None


def test_consensus_pass_and_sample_accuracy_by_hand():
    completions = [
        [A("7"), A("8"), A("7"), "no tags 7"],  # gold 7: vote 7 (2 of 3 votes, one abstains) -> right; 2 right
        [A("5"), A("6"), A("6"), A("5")],  # gold 6: tie 5/6 -> first seen (5) -> wrong; 2 right
        ["nothing", "still nothing", "", "<answer></answer>"],  # gold 3: all abstain -> wrong; 0 right
        [A("4"), A("9"), A("9"), A("10")],  # gold 4: vote 9 -> wrong; pass@k right (1 right)
    ]
    res = consensus_from_completions(completions, ["7", 6, "3", "4"])
    assert res["n"] == 4
    assert res["cons_at_k"] == 1 / 4
    assert res["pass_at_k"] == 3 / 4
    assert res["sample_accuracy"] == 5 / 16
    rows = res["rows"]
    assert [r["voted"] for r in rows] == ["7", "5", None, "9"]
    assert [r["votes"] for r in rows] == [2, 2, 0, 2]
    assert [r["abstained"] for r in rows] == [1, 0, 4, 0]
    assert [r["cons_correct"] for r in rows] == [True, False, False, False]
    assert [r["n_correct"] for r in rows] == [2, 2, 0, 1]
    # bounds that hold for any input: cons@k <= pass@k, sample accuracy <= pass@k
    assert res["cons_at_k"] <= res["pass_at_k"] and res["sample_accuracy"] <= res["pass_at_k"]
    # k = 1: the three numbers are the same
    single = consensus_from_completions([[A("7")], [A("2")], ["x"]], ["7", "3", "1"])
    assert single["cons_at_k"] == single["pass_at_k"] == single["sample_accuracy"] == 1 / 3
    with pytest.raises(ValueError):
        consensus_from_completions([[A("1")]], [])


def test_win_rate_from_scores_by_hand():
    res = win_rate_from_scores([1.0, 2.0, 3.0 + 5e-7, -1.0], [0.0, 2.0, 3.0, 0.5])
    assert res["outcomes"] == [1.0, 0.5, 0.5, 0.0]
    assert res["win_rate"] == 2.0 / 4 and (res["wins"], res["ties"], res["losses"]) == (1, 2, 1)
    with pytest.raises(ValueError):
        win_rate_from_scores([1.0], [1.0, 2.0])


# ------------------------------------------------------------------------------- on the tiny model
@pytest.fixture(scope="module")
def tiny(tiny_model):
    from rlhf_core.text.model import load_model

    torch.set_num_threads(1)
    return load_model(str(tiny_model))


@pytest.fixture(scope="module")
def reward_dir(tiny_model, tmp_path_factory):
    from rlhf_core.text.reward_model import load_base_reward_model, save_text_reward_model

    model, _, _ = load_base_reward_model(str(tiny_model), max_length=256, seed=0)
    return save_text_reward_model(model, tmp_path_factory.mktemp("rm") / "rm", meta={"base_model": "tiny"})


def _held(n=4, level=1):
    from rlhf_core.text.gold_eval import task_prompts

    return task_prompts(level, 0, n, 0)[1]


@needs_model
def test_greedy_cons_at_1_equals_pass_at_1_and_sampling_is_seeded(tiny):
    from rlhf_core.text.generation import SamplingSettings
    from rlhf_core.text.gold_eval import evaluate_gold
    from rlhf_core.text.rl_common import sample_for_training
    from rlhf_core.text.tasks import render_task_prompt

    model, tok, eos = tiny.model, tiny.tokenizer, tiny.eos_token_ids
    held = _held(4)
    greedy = evaluate_gold(model, tok, held, few_shot=False, max_new_tokens=6, eos_token_ids=eos)
    cons1 = consensus_at_k(model, tok, held, k=1, temperature=0.0, max_new_tokens=6, few_shot=False, eos_token_ids=eos)
    assert cons1["cons_at_k"] == cons1["pass_at_k"] == cons1["sample_accuracy"] == greedy["accuracy"]
    # the very same greedy texts as evaluate_gold decodes (its first is its "example")
    rendered = [render_task_prompt(tok, p.text, False, True) for p in held]
    texts = [s.text for s in sample_for_training(model, tok, rendered, SamplingSettings(max_new_tokens=6,
                                                                                        temperature=0.0),
                                                 [0] * 4, eos_token_ids=eos)]
    assert [r["completions"] for r in cons1["rows"]] == [[t] for t in texts]
    assert texts[0] == greedy["example"]
    # greedy with k = 3: three identical samples per prompt, so the vote equals the single answer
    cons3g = consensus_at_k(model, tok, held, k=3, temperature=0.0, max_new_tokens=6, few_shot=False,
                            eos_token_ids=eos, batch_size=5)
    assert [r["completions"] for r in cons3g["rows"]] == [[t] * 3 for t in texts]
    assert cons3g["cons_at_k"] == cons1["cons_at_k"]
    # sampled: seeded (the same texts again), and really sampling (not all equal); batch composition can
    # change float rounding, so reproducibility is asserted for the same batch size
    a = consensus_at_k(model, tok, held, k=4, temperature=1.0, max_new_tokens=6, few_shot=False, eos_token_ids=eos,
                       seed=3, batch_size=16)
    b = consensus_at_k(model, tok, held, k=4, temperature=1.0, max_new_tokens=6, few_shot=False, eos_token_ids=eos,
                       seed=3, batch_size=16)
    assert [r["completions"] for r in a["rows"]] == [r["completions"] for r in b["rows"]]
    assert any(len(set(r["completions"])) > 1 for r in a["rows"])
    # the numbers are those of the vote over the returned completions
    again = consensus_from_completions([r["completions"] for r in a["rows"]], [p.meta["gold_answer"] for p in held])
    assert (again["cons_at_k"], again["pass_at_k"], again["sample_accuracy"]) == (
        a["cons_at_k"], a["pass_at_k"], a["sample_accuracy"])
    assert a["cons_at_k"] <= a["pass_at_k"] and a["k"] == 4
    with pytest.raises(ValueError, match="k must be at least 1"):
        consensus_at_k(model, tok, held, k=0)


@needs_model
def test_win_rate_against_itself_is_one_half_and_a_perturbed_policy_is_judged_by_its_scores(tiny, reward_dir):
    from rlhf_core.text.reward_model import load_text_reward_model, score_responses
    from rlhf_core.text.tasks import render_task_prompt

    model, tok, eos = tiny.model, tiny.tokenizer, tiny.eos_token_ids
    rm, rm_tok = load_text_reward_model(reward_dir)
    held = _held(4)
    texts = [p.text for p in held]
    rendered = [render_task_prompt(tok, t, False, True) for t in texts]
    kw = dict(max_new_tokens=6, eos_token_ids=eos)
    same = win_rate_vs_reference(model, model, tok, texts, rendered, rm, rm_tok, **kw)
    assert same["win_rate"] == 0.5 and same["ties"] == 4 and same["wins"] == same["losses"] == 0
    # a separate copy, sampled: the same seed per prompt gives the same responses -> all ties again
    twin = copy.deepcopy(model)
    sampled = win_rate_vs_reference(model, twin, tok, texts, rendered, rm, rm_tok, temperature=1.0, seed=5, **kw)
    assert sampled["win_rate"] == 0.5
    assert [r["policy_response"] for r in sampled["rows"]] == [r["reference_response"] for r in sampled["rows"]]
    # a perturbed policy: different responses, the outcome of each prompt follows the reward model's scores
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    res = win_rate_vs_reference(other, model, tok, texts, rendered, rm, rm_tok, **kw)
    rows = res["rows"]
    assert any(r["policy_response"] != r["reference_response"] for r in rows)
    expected = []
    for r in rows:
        d = r["policy_score"] - r["reference_score"]
        expected.append(0.5 if abs(d) < 1e-6 else float(d > 0))
    assert [r["outcome"] for r in rows] == expected
    assert res["win_rate"] == sum(expected) / 4
    assert res["policy_score_mean"] == pytest.approx(sum(r["policy_score"] for r in rows) / 4, abs=1e-9)
    # the scores are the reward model's own
    rescored = score_responses(rm, rm_tok, texts, [r["policy_response"] for r in rows]).tolist()
    assert rescored == pytest.approx([r["policy_score"] for r in rows], abs=1e-5)
    assert [r["reference_response"] for r in rows] == [r["policy_response"] for r in same["rows"]]


# ------------------------------------------------------------------------------- the job, the CLI, bad inputs
def _policy_run(project, tiny_model, base: str):
    """A finished 'grpo' run whose text_policy checkpoint is a perturbed tiny model based on ``base``."""
    from transformers import AutoModelForCausalLM

    run_id = project.create_run("grpo", {}, status="running")
    folder = project.run_folder(run_id) / "policy"
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    model.save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (tiny_model / name).is_file():
            shutil.copy(tiny_model / name, folder / name)
    (folder / "workbench_policy.json").write_text(json.dumps({"base_model": base, "algorithm": "grpo"}))
    project.add_checkpoint(run_id, "text_policy", folder, step=2, meta={"base_model": base})
    project.finish_run(run_id, "completed", result={})
    return run_id


def _reward_run(project, reward_dir):
    run_id = project.create_run("text_reward_model", {}, status="running")
    folder = project.run_folder(run_id) / "text_reward_model"
    shutil.copytree(reward_dir, folder)
    project.add_checkpoint(run_id, "text_reward_model", folder, step=2)
    project.finish_run(run_id, "completed", result={})
    return run_id


@needs_model
def test_the_job_stores_metrics_samples_and_result(project, tiny_model, reward_dir):
    from rlhf_core.store import Project

    policy_run = _policy_run(project, tiny_model, str(tiny_model))
    reward_run = _reward_run(project, reward_dir)
    project.close()
    config = TextEvalConfig(policy_run=policy_run, reward_run=reward_run, heldout_tasks=3, k=3, max_new_tokens=5,
                            temperature=1.0, few_shot=False)
    ctx = RecordingContext()
    outcome = execute_job(get_job("text_eval"), config, ctx, project_path=project.folder)
    assert outcome.status == "completed", outcome.error
    res = outcome.result
    assert res["policy"] == f"run {policy_run}" and res["prompts"] == 3 and res["k"] == 3
    assert res["reference_model"] == str(tiny_model) and res["win_rate_skipped"] is None
    assert res["wins"] + res["ties"] + res["losses"] == 3
    assert res["win_rate"] == (res["wins"] + 0.5 * res["ties"]) / 3
    assert res["cons_at_k"] <= res["pass_at_k"] and res["sample_accuracy"] <= res["pass_at_k"]
    with Project.open(project.folder) as p:
        stored = p.metrics(outcome.run_id)
        samples = p.samples(outcome.run_id, "text_eval")
        run = p.get_run(outcome.run_id)
    assert run["kind"] == "text_eval" and run["status"] == "completed"
    for key, name in (("eval/pass_at_1", "pass_at_1"), ("eval/cons_at_k", "cons_at_k"),
                      ("eval/pass_at_k", "pass_at_k"), ("eval/win_rate", "win_rate")):
        assert stored[key] == ([0], [pytest.approx(res[name])])
    consensus = [s["payload"] for s in samples if s["payload"]["part"] == "consensus"]
    duels = [s["payload"] for s in samples if s["payload"]["part"] == "win_rate"]
    assert len(consensus) == 3 and len(duels) == 3
    assert sum(c["cons_correct"] for c in consensus) / 3 == res["cons_at_k"]
    assert sum(d["outcome"] for d in duels) / 3 == res["win_rate"]
    assert all(len(c["answers"]) == 3 for c in consensus)


@needs_model
def test_without_a_reward_model_the_win_rate_is_skipped_with_a_message(project, tiny_model):
    project.close()
    config = TextEvalConfig(policy_folder=str(tiny_model), heldout_tasks=2, k=2, max_new_tokens=4, few_shot=False)
    ctx = RecordingContext()
    outcome = execute_job(get_job("text_eval"), config, ctx, project_path=project.folder)
    assert outcome.status == "completed", outcome.error
    assert outcome.result["win_rate"] is None and "No reward model" in outcome.result["win_rate_skipped"]
    keys = set(ctx.metric_log[0][1])
    assert {"eval/pass_at_1", "eval/cons_at_k", "eval/pass_at_k"} <= keys and "eval/win_rate" not in keys


@needs_model
def test_cli_eval_text_prints_json_last_and_refuses_bad_runs(project, tiny_model, reward_dir, capsys):
    from rlhf_core.cli import main

    policy_run = _policy_run(project, tiny_model, str(tiny_model))
    reward_run = _reward_run(project, reward_dir)
    n_runs = len(project.runs())
    project.close()
    args = ["eval-text", "--project", str(project.folder), "--policy-run", str(policy_run), "--reward-run",
            str(reward_run), "--k", "2", "--prompts", "2", "--max-new-tokens", "4", "--no-few-shot"]
    assert main(args) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["status"] == "completed" and last["job"] == "text_eval"
    assert last["result"]["k"] == 2 and 0.0 <= last["result"]["win_rate"] <= 1.0
    from rlhf_core.store import Project

    with Project.open(project.folder) as p:
        assert len(p.runs()) == n_runs + 1
    # bad inputs: a clear message, exit code 2, no run stored
    bad = [(["--policy-run", str(reward_run)], "saved no text_policy checkpoint"),
           (["--policy-run", "999"], "no run 999"),
           (["--policy-run", str(policy_run), "--reward-run", str(policy_run)], "saved no text_reward_model"),
           (["--policy-folder", str(project.folder / "nope")], "no model folder"),
           (["--policy-folder", str(tiny_model), "--reward-model", str(tiny_model)], "is not a text reward model"),
           (["--policy-folder", str(tiny_model), "--k", "0"], "k: must be at least 1")]
    for extra, message in bad:
        assert main(["eval-text", "--project", str(project.folder), *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra
    with Project.open(project.folder) as p:
        assert len(p.runs()) == n_runs + 1


def test_config_refuses_bad_values(tmp_path):
    with pytest.raises(cfg.ConfigError, match="k: must be at least 1"):
        cfg.from_dict(TextEvalConfig, {"k": 0})
    with pytest.raises(cfg.ConfigError, match="policy_folder: no model folder"):
        cfg.from_dict(TextEvalConfig, {"policy_folder": str(tmp_path / "missing")})
    (tmp_path / "rm").mkdir()
    with pytest.raises(cfg.ConfigError, match="is not a text reward model"):
        cfg.from_dict(TextEvalConfig, {"reward_model": str(tmp_path / "rm")})
    (tmp_path / "rm" / "reward_model.json").write_text('{"format": "something else"}')
    with pytest.raises(cfg.ConfigError, match="does not describe a text reward model"):
        cfg.from_dict(TextEvalConfig, {"reward_model": str(tmp_path / "rm")})


def test_a_bad_config_stores_no_run(project, tmp_path):
    project.close()
    config = TextEvalConfig(policy_folder=str(tmp_path / "missing"))
    outcome = execute_job(get_job("text_eval"), config, RecordingContext(), project_path=project.folder)
    assert outcome.status == "failed" and "policy_folder: no model folder" in outcome.error
    assert outcome.run_id is None
    from rlhf_core.store import Project

    with Project.open(project.folder) as p:
        assert p.runs() == []


# ------------------------------------------------------------------------------- GRPO's final cons@k
@needs_model
def test_grpo_logs_cons_at_k_at_the_final_evaluation(tiny_model):
    from rlhf_core.trainers.text.grpo import GRPOConfig, train_grpo

    config = cfg.from_dict(GRPOConfig, dict(model=str(tiny_model), steps=1, prompts_per_step=1, group_size=2,
                                            max_new_tokens=4, train_tasks=2, heldout_tasks=2, eval_every=0,
                                            few_shot=False, save=False, eval_consensus_k=3))
    ctx = RecordingContext()
    result = train_grpo(config, ctx)
    steps, values = ctx.series("gold/cons_at_k")
    assert steps == [1] and values == [result["gold_cons_at_k"]]
    assert result["consensus_k"] == 3 and result["gold_cons_at_k"] <= result["gold_pass_at_k"]
    off = train_grpo(cfg.replace(config, eval_consensus_k=0), RecordingContext())
    assert "gold_cons_at_k" not in off


def test_reference_is_the_recorded_base_model(tmp_path):
    from rlhf_core.analysis.text_evaluation import resolve_inputs
    from rlhf_core.text.reward_model import FORMAT_NAME, META_FILE

    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "config.json").write_text("{}")
    base = tmp_path / "base"
    base.mkdir()
    judge = tmp_path / "judge"
    judge.mkdir()
    (judge / META_FILE).write_text(json.dumps({"format": FORMAT_NAME}))

    def resolve(recorded, **changes):
        if recorded is not None:
            (policy / "workbench_policy.json").write_text(json.dumps({"base_model": recorded}))
        return resolve_inputs(TextEvalConfig(policy_folder=str(policy), **changes))

    assert resolve(None).reference == str(policy)  # no record: the folder is its own base
    assert resolve("SmolLM2-135M-Instruct").reference == ""  # the bundled model
    assert resolve(str(base)).reference == str(base)
    assert resolve(str(base), reference_model=str(policy)).reference == str(policy)  # an explicit choice wins
    # a base that is not a local folder matters only when there is a win rate to measure
    assert resolve("some-org/some-model").reward_model is None
    with pytest.raises(ValueError, match="not a local folder; set reference_model"):
        resolve("some-org/some-model", reward_model=str(judge))
    assert resolve(str(base), reward_model=str(judge)).reward_model == judge
    assert resolve_inputs(TextEvalConfig()).policy == "" and resolve_inputs(TextEvalConfig()).reference == ""
    with pytest.raises(ValueError, match="policy_run needs a project"):
        resolve_inputs(TextEvalConfig(policy_run=3))
