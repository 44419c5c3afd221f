"""The PPO over-optimisation demo: the gold reward by hand, then the whole story end to end on a tiny Llama."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rlhf_core.experiments.ppo_overoptimisation import (
    gold_reward,
    key_words,
    keyword_coverage,
    label_pairs,
    overoptimisation_summary,
)
from tests.conftest import ROOT, needs_model



def test_gold_reward_is_keyword_coverage_minus_a_length_penalty():
    prompt = "Explain how a lighthouse keeper spends the night."
    assert key_words(prompt) == ["lighthouse", "keeper", "spends", "night"]  # 'explain', 'how', 'the' dropped
    # 'lighthouses' and 'nightly' share the first 5 letters of a key word; 'keep' does not ('keepe')
    assert keyword_coverage(prompt, "Lighthouses are lit nightly; they keep ships safe.") == 0.5
    assert keyword_coverage(prompt, "") == 0.0 and keyword_coverage("Why?", "Because.") == 0.0
    assert gold_reward(prompt, "A keeper watches the lighthouse all night.", 12) == 0.75
    assert math.isclose(gold_reward(prompt, "A keeper watches the lighthouse all night.", 30, length_limit=20,
                                    length_weight=0.03), 0.75 - 0.3)


def test_repetition_share_and_the_gold_that_penalises_it():
    from rlhf_core.experiments.ppo_overoptimisation import PPODemoConfig, gold_function, repetition_share

    assert repetition_share("bike bike bike bike") == 0.75
    # content words: budget, rule, budget, says (the 3-letter "the" and the stop word "what" do not count)
    assert repetition_share("The budget rule: what the budget says.") == 0.25
    # compared on the first 5 letters, as key words are: 'interviewer' and "interviewer's" repeat
    assert math.isclose(repetition_share("your interviewer's interviewer feedback"), 1 / 3)
    assert repetition_share("") == 0.0 and repetition_share("It is so.") == 0.0
    prompt = "Explain how a lighthouse keeper spends the night."
    stuffed = "Lighthouse keeper, lighthouse keeper, lighthouse keeper at night."  # 4 of 7 content words repeat
    assert keyword_coverage(prompt, stuffed) == 0.75
    assert gold_reward(prompt, stuffed, 12) == 0.75  # the default gold does not see the stuffing
    assert math.isclose(gold_reward(prompt, stuffed, 12, repeat_weight=1.0), 0.75 - 4 / 7)
    # the demo's setting reaches the gold it labels and scores with
    assert gold_function(PPODemoConfig())(prompt, stuffed, 12) == 0.75
    assert math.isclose(gold_function(PPODemoConfig(gold_repeat_weight=0.5, gold_length_limit=10))(prompt, stuffed, 12),
                        0.75 - 0.03 * 2 - 0.5 * 4 / 7)


def test_labels_pair_every_two_responses_of_a_prompt_by_gold():
    class S:  # the two fields label_pairs reads from a training sample
        def __init__(self, i, text):
            self.prompt_index, self.text = i, text

    samples = [S(0, "a"), S(0, "b"), S(0, "c"), S(1, "x"), S(1, "y")]
    pairs = label_pairs(["p0", "p1"], samples, [0.5, 0.2, 0.5, 0.0, 1.0])
    got = [(p.prompt, p.left, p.right, p.target) for p in pairs]
    assert got == [("p0", "a", "b", 1.0), ("p0", "a", "c", 0.5), ("p0", "b", "c", 0.0), ("p1", "x", "y", 0.0)]



def test_summary_reads_gao_curve_from_a_hand_made_history():
    steps = list(range(8))
    proxy = [0.0, 0.3, 0.6, 0.9, 1.2, 1.5, 1.8, 2.1]  # keeps rising
    gold = [0.0, 0.3, 0.6, 0.3, 0.0, -0.3, -0.3, -0.3]  # rises, peaks at step 2, falls
    kl = [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 25.0, 36.0]
    out = overoptimisation_summary(steps, proxy, gold, kl, margin=0.15)
    # centred 3-step means of gold: steps 1..6 -> 0.3, 0.4, 0.3, 0.0, -0.2, -0.3
    assert out["gold_peak_step"] == 2 and math.isclose(out["gold_peak"], 0.4)
    assert math.isclose(out["proxy_at_gold_peak"], 0.6)
    assert math.isclose(out["gold_last_window"], -0.3) and math.isclose(out["proxy_last_window"], 1.8)
    assert out["sqrt_kl_last"] == 6.0 and out["overoptimised"] is True
    # von Neumann noise: diffs .3 .3 -.3 -.3 -.3 0 0 -> sqrt(5 * .09 / 7 / 2)
    assert math.isclose(out["gold_step_noise"], math.sqrt(5 * 0.09 / 7 / 2))
    assert out["curve"]["gold"] == gold and out["curve"]["step"] == steps and out["curve"]["kl_seq"] == kl

    # the same fall, but smaller than the margin: not over-optimised
    small = overoptimisation_summary(steps, proxy, [0.0, 0.03, 0.06, 0.03, 0.0, -0.03, -0.03, -0.03], kl)
    assert math.isclose(small["gold_peak"] - small["gold_last_window"], 0.07) and small["overoptimised"] is False
    # gold falls but the proxy fell too (the policy just got worse): not over-optimisation either
    worse = overoptimisation_summary(steps, [-x for x in proxy], gold, kl)
    assert worse["gold_peak_step"] == 2 and worse["overoptimised"] is False
    # gold still rising at the end: its peak is the last window
    rising = overoptimisation_summary(steps, proxy, [0.1 * i for i in steps], kl)
    assert rising["gold_peak_step"] == 6 and rising["gold_last_window"] == rising["gold_peak"]
    assert rising["overoptimised"] is False
    # NaN gold (not evaluated) is skipped; too short a history gives no verdict
    gap = overoptimisation_summary([0, 1, 2, 3], [0, 1, 2, 3], [0.0, float("nan"), 0.3, 0.6], [0, 1, 2, 3])
    assert gap["curve"]["step"] == [0, 2, 3] and math.isclose(gap["gold_peak"], 0.3) and gap["gold_peak_step"] == 2
    short = overoptimisation_summary([0, 1], [0.0, 1.0], [0.0, -1.0], [0.0, 1.0])
    assert short["gold_peak"] is None and short["overoptimised"] is False


def _run_demo(tiny_model, project, capsys, *flags: str) -> dict:
    """``demo ppo`` on the tiny model (3 prompts x 3 label samples, 20 proxy epochs) in a new project: its JSON."""
    from rlhf_core.cli import main
    from rlhf_core.store import Project

    Project.create(project).close()
    code = main(["demo", "ppo", "--project", str(project), "--model", str(tiny_model),
                 "--n-prompts", "3", "--label-samples", "3", "--proxy-epochs", "20", *flags])
    assert code == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@needs_model
def test_demo_runs_end_to_end_from_the_command_line(tiny_model, tmp_path, capsys):
    from rlhf_core.experiments.ppo_overoptimisation import PPODemoConfig, gold_function
    from rlhf_core.store import Project

    project = tmp_path / "demo.rlhf"
    out = _run_demo(tiny_model, project, capsys, "--steps", "2", "--seed", "3", "--beta", "0.1",
                    "--batch-size", "4", "--minibatch-size", "4", "--max-new-tokens", "5", "--gold-length-limit", "2",
                    "--eval-prompts", "4", "--reward-baseline", "batch")
    for key in ("reward_first", "reward_last", "gold_first", "gold_last", "kl_last", "mean_length_first",
                "mean_length_last", "wall_seconds"):
        assert key in out, key
    assert out["status"] == "completed" and out["kl_first"] == 0.0 and out["beta"] == 0.1
    assert out["label_pairs"] == 3 * 3  # 3 prompts x C(3, 2) pairs
    assert out["window"] == 1 and out["reward_window_last"] == out["reward_last"]  # 3 rollouts: windows of 1
    assert out["gold_window_first"] == out["gold_first"]
    assert abs(out["reward_first"]) < 1e-5  # the proxy is standardised on the first rollout
    assert out["reward_baseline"] == "batch" and out["proxy_scale"] > 0 and out["proxy_prompt_baselines"] == 0
    # at most 5 tokens, 2 free: every gold lies in [0 - 0.03 * 3, 1]
    assert -0.09 - 1e-6 <= out["gold_first"] <= 1.0 and 1.0 <= out["mean_length_first"] <= 5.0
    # the summary: 3 rollouts make one centred window (step 1), which is also the last window
    curve = out["curve"]
    assert curve["step"] == [0, 1, 2] and out["gold_peak_step"] == 1
    assert math.isclose(curve["gold"][0], out["gold_first"], abs_tol=1e-4) and math.isclose(curve["kl_seq"][0], 0.0)
    assert math.isclose(out["gold_peak"], sum(curve["gold"]) / 3, abs_tol=1e-4)
    assert out["gold_last_window"] == out["gold_peak"] and out["overoptimised"] is False
    assert math.isclose(out["proxy_last_window"], sum(curve["proxy"]) / 3, abs_tol=1e-4)
    assert out["overopt_margin"] == 0.15
    assert out["seconds_per_step"] > 0
    # the win rate on 4 held-out prompts (win 1, tie 0.5, loss 0): a higher mean gold needs a win somewhere
    assert out["eval_prompts"] == 4 and 0.0 <= out["win_rate_gold"] <= 1.0 and (8 * out["win_rate_gold"]).is_integer()
    for side in ("policy", "reference"):
        assert -0.09 - 1e-6 <= out[f"eval_gold_{side}"] <= 1.0 and 1.0 <= out[f"eval_length_{side}"] <= 5.0
    assert out["win_rate_gold"] > 0.0 or out["eval_gold_policy"] <= out["eval_gold_reference"]
    assert out["win_rate_gold"] < 1.0 or out["eval_gold_policy"] >= out["eval_gold_reference"]
    assert 0.0 <= out["win_rate_proxy"] <= 1.0
    with Project.open(project) as p:
        metrics = p.metrics(out["run_id"])
        samples = p.samples(out["run_id"], "text_rl")
    assert metrics["gold/reward"][0] == [0, 1, 2] and metrics["kl/sqrt_seq"][1][0] == 0.0
    assert metrics["reward/model"][0] == [0, 1, 2] and "reward_model/loss" in metrics
    assert metrics["eval/win_rate_gold"] == ([2], [out["win_rate_gold"]])
    # the gold of each published sample is the gold reward of its text and length (2 tokens free)
    gold_of = gold_function(PPODemoConfig(gold_length_limit=2))
    for s in samples:
        payload = s["payload"]
        assert 1 <= payload["length"] <= 5
        assert math.isclose(payload["gold"], gold_of(payload["prompt"], payload["response"], payload["length"]),
                            abs_tol=1e-6)
    # the paired evaluation, 8 responses to each of the 3 training prompts: the gap is the proxy's gain minus
    # the gold's, and texts identical in every pair would make every gain exactly 0
    assert out["paired_n"] == 3 * 8 and 0.0 <= out["paired_identical"] <= 1.0
    assert math.isfinite(out["paired_gold_gain"]) and out["paired_gold_gain_se"] >= 0.0
    if out["paired_identical"] == 1.0:
        assert out["paired_gold_gain"] == out["paired_proxy_gain"] == 0.0
    for side in ("policy", "reference"):
        assert 1.0 <= out[f"paired_length_{side}"] <= 5.0
    assert math.isclose(out["paired_goodhart_gap"], out["paired_proxy_gain"] - out["paired_gold_gain"], abs_tol=1e-9)
    assert out["paired_evaluations"] == 1 and out["paired_seconds_total"] == out["paired_seconds"] > 0
    # the default best-of-n curve before PPO: 32 reference responses per prompt, n = 1 .. 32
    assert out["bon_samples"] == 32 and out["bon_curve"]["n"] == [1, 2, 4, 8, 16, 32]
    assert metrics["eval/paired_goodhart_gap"][0] == [2]  # after the last of the 2 steps only
    assert math.isclose(metrics["eval/paired_goodhart_gap"][1][0], out["paired_goodhart_gap"], rel_tol=1e-6)
    assert math.isclose(metrics["eval/win_rate"][1][0], out["win_rate_proxy"])
    assert math.isclose(metrics["kl/sqrt_seq"][1][-1], math.sqrt(max(out["kl_last"], 0.0)), rel_tol=1e-6)
    assert len(samples) == 3 * 3 and "gold" in samples[0]["payload"]


@needs_model
def test_demo_default_centres_the_proxy_per_prompt(tiny_model, tmp_path, capsys):
    """The default baseline: every training prompt gets its own offset from the reference's label samples."""
    out = _run_demo(tiny_model, tmp_path / "demo.rlhf", capsys, "--steps", "1", "--seed", "1",
                    "--batch-size", "3", "--minibatch-size", "3", "--max-new-tokens", "4", "--eval-prompts", "0",
                    "--paired-eval-every", "1", "--paired-eval-samples", "2")
    assert out["status"] == "completed" and out["reward_baseline"] == "prompt" and out["beta"] == 1.0
    assert out["proxy_prompt_baselines"] == 3 and out["proxy_scale"] > 0 and out["kl_first"] == 0.0
    # --paired-eval-every 1 with 1 step: the check at step 1 is also the final one (not run twice)
    assert out["paired_evaluations"] == 1 and out["paired_n"] == 3 * 2
    assert math.isfinite(out["reward_first"]) and math.isfinite(out["reward_last"])
    # the gold in the proxy's units: each rollout answers every prompt once (batch = prompts = 3), so its
    # centred mean is (raw mean - the label samples' mean) / their within-prompt spread
    assert out["gold_scale"] > 0 and out["window"] == 1
    for end in ("first", "last"):
        assert math.isclose(out[f"gold_centred_window_{end}"],
                            (out[f"gold_{end}"] - out["label_gold_mean"]) / out["gold_scale"], abs_tol=1e-6)
    assert math.isclose(out["goodhart_gap"], out["reward_last"] - out["gold_centred_window_last"], abs_tol=1e-9)


def test_prompt_baseline_by_hand():
    from rlhf_core.experiments.ppo_overoptimisation import goodhart_gap
    from rlhf_core.trainers.text.ppo import PromptBaseline

    base = PromptBaseline.fit(["a", "a", "b", "b", "b"], [1.0, 3.0, 0.0, 2.0, 4.0])
    # means a 2, b 2; squares (1 + 1) + (4 + 0 + 4) = 10 over (1 + 2) dof
    assert base.offsets == {"a": 2.0, "b": 2.0} and math.isclose(base.scale, math.sqrt(10 / 3))
    assert math.isclose(base.offset, 2.0)
    out = base(["a", "b", "c"], [5.0, 2.0, 2.0 + math.sqrt(10 / 3)]).tolist()
    assert [round(v, 6) for v in out] == [round(3 / math.sqrt(10 / 3), 6), 0.0, 1.0]
    assert PromptBaseline.fit(["a", "a"], [1.0, 1.0]).scale == 1.0  # no spread: unit scale, not a division by 0
    gap = goodhart_gap({"reward_window_first": 0.0, "reward_window_last": 1.4, "gold_centred_window_first": -0.2,
                        "gold_centred_window_last": -0.25})
    assert math.isclose(gap, 1.65) and goodhart_gap({"reward_window_last": 1.0}) is None


@needs_model
@pytest.mark.parametrize("lora_rank", [0, 2])
def test_untrained_policy_ties_with_its_reference(tiny_model, lora_rank):
    """Before any update the policy IS the reference (a frozen copy, or the same model with fresh LoRA
    adapters switched off): the same greedy responses, so every comparison is a tie under both judges."""
    from rlhf_core.experiments.ppo_overoptimisation import heldout_win_rates
    from rlhf_core.text.reward_model import load_base_reward_model
    from rlhf_core.text.rl_common import load_policy

    tiny = str(tiny_model)
    setup = load_policy(tiny, lora_rank=lora_rank, need_reference=True)
    assert (setup.reference is None) == (lora_rank > 0)
    proxy, proxy_tok, _ = load_base_reward_model(tiny, max_length=64, seed=0)
    seen = []

    def gold_of(prompt, response, tokens):
        seen.append(tokens)
        return float(len(response))

    prompts = ["Name a colour.", "Describe a river at night.", "Why do cats purr?"]
    out = heldout_win_rates(setup, proxy, proxy_tok, prompts, gold_of, max_new_tokens=4)
    assert out["eval_prompts"] == 3 and out["win_rate_proxy"] == 0.5 and out["win_rate_gold"] == 0.5
    assert math.isclose(out["eval_proxy_policy"], out["eval_proxy_reference"], rel_tol=1e-5)  # batch rounding
    # policy then reference, the same lengths, capped at 4 tokens
    assert len(seen) == 6 and seen[:3] == seen[3:] and all(1 <= n <= 4 for n in seen)
    assert out["eval_length_policy"] == out["eval_length_reference"] == sum(seen[:3]) / 3


def test_mean_and_standard_error_by_hand():
    from rlhf_core.experiments.ppo_overoptimisation.evaluation import _mean_se

    m, se = _mean_se([1.0, 2.0, 3.0, 6.0])  # mean 3, squares 4 + 1 + 0 + 9 = 14 over 3 dof
    assert m == 3.0 and math.isclose(se, math.sqrt(14 / 3 / 4))
    assert _mean_se([2.5]) == (2.5, 0.0)


@needs_model
@pytest.mark.parametrize("lora_rank", [0, 2])
def test_paired_eval_is_exactly_zero_for_an_untouched_policy_and_pairs_by_seed(tiny_model, lora_rank):
    """Policy and reference draw response j of prompt i with the same random numbers: before any update they
    write the same texts (gain and gap exactly 0); after a weight change the gains are the per-pair
    differences of the scores, recomputed here from samples drawn separately with the same seeds."""
    from rlhf_core.experiments.ppo_overoptimisation import paired_goodhart_eval
    from rlhf_core.text.generation import SamplingSettings
    from rlhf_core.text.rl_common import load_policy, render_chat_prompt, sample_for_training

    setup = load_policy(str(tiny_model), lora_rank=lora_rank, need_reference=True)
    prompts = ["Name a colour.", "Describe a river at night.", "Why do cats purr?"]
    settings = SamplingSettings(max_new_tokens=6, temperature=1.0, top_p=1.0, top_k=0)

    def proxy_fn(ps, texts):  # any deterministic score will do: text length and a prompt-dependent shift
        return [len(t) + 10.0 * prompts.index(p) for p, t in zip(ps, texts)]

    def gold_fn(ps, texts, tokens):
        return [float(n) for n in tokens]

    same = paired_goodhart_eval(setup, proxy_fn, gold_fn, prompts, 4, settings=settings, seed=5)
    assert same["paired_n"] == 12 and same["paired_identical"] == 1.0
    for key in ("paired_proxy_gain", "paired_gold_gain", "paired_goodhart_gap"):
        assert same[key] == 0.0 and same[f"{key}_se"] == 0.0
    assert same["paired_length_policy"] == same["paired_length_reference"]

    with torch.no_grad():  # change the policy, not the reference: its LoRA adapters or its own weights
        trainable = [p for p in setup.model.parameters() if p.requires_grad]
        gen = torch.Generator().manual_seed(0)
        for p in trainable:
            p.add_(torch.randn(p.shape, generator=gen) * 0.5)
    moved = paired_goodhart_eval(setup, proxy_fn, gold_fn, prompts, 4, settings=settings, seed=5)
    assert moved["paired_identical"] < 1.0
    cache: dict = {}  # the reference's side computed once, then reused: the same numbers
    assert paired_goodhart_eval(setup, proxy_fn, gold_fn, prompts, 4, settings=settings, seed=5, cache=cache) == moved
    assert len(cache["reference"][0]) == 12
    assert paired_goodhart_eval(setup, proxy_fn, gold_fn, prompts, 4, settings=settings, seed=5, cache=cache) == moved
    rows = [p for p in prompts for _ in range(4)]
    rendered = [render_chat_prompt(setup.tokenizer, p) for p in rows]
    seeds = [5 * 7919 + 500_009 + 31 * i for i in range(12)]
    ours = sample_for_training(setup.model, setup.tokenizer, rendered, settings, seeds)
    if setup.reference is not None:
        theirs = sample_for_training(setup.reference, setup.tokenizer, rendered, settings, seeds)
    else:
        with setup.model.disable_adapter():
            theirs = sample_for_training(setup.model, setup.tokenizer, rendered, settings, seeds)
    d_proxy = [len(a.text) - len(b.text) for a, b in zip(ours, theirs)]  # the prompt shift cancels
    d_gold = [len(a.completion_ids) - len(b.completion_ids) for a, b in zip(ours, theirs)]
    assert math.isclose(moved["paired_proxy_gain"], sum(d_proxy) / 12, abs_tol=1e-9)
    assert math.isclose(moved["paired_gold_gain"], sum(d_gold) / 12, abs_tol=1e-9)
    gaps = [a - b for a, b in zip(d_proxy, d_gold)]
    mean = sum(gaps) / 12
    assert math.isclose(moved["paired_goodhart_gap"], mean, abs_tol=1e-9)
    assert math.isclose(moved["paired_goodhart_gap_se"],
                        math.sqrt(sum((g - mean) ** 2 for g in gaps) / 11 / 12), abs_tol=1e-9)


def test_benchmark_paired_verdict_by_hand():
    """benchmarks/ppo_demo.py: beta 0 must beat beta 1 on the same seed by more than 2 SE of the difference."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "ppo_demo_bench", ROOT / "benchmarks" / "ppo_demo.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def run(seed, beta, gap, se):
        return {"seed": seed, "beta": beta, "paired_goodhart_gap": gap, "paired_goodhart_gap_se": se}

    runs = [run(0, 0.0, 0.9, 0.1), run(0, 1.0, 0.2, 0.1),  # 0.7 > 2 * 0.141: a win
            run(1, 0.0, 0.6, 0.2), run(1, 1.0, 0.1, 0.2),  # 0.5 < 2 * 0.283: not significant
            run(2, 0.0, 0.4, 0.05), run(2, 1.0, 0.0, 0.05)]  # 0.4 > 0.141: a win
    assert bench.paired_seed_wins(runs) == {0: True, 1: False, 2: True}
    assert bench.paired_gap_verdict(runs) is True  # median beta-0 gap 0.6 >= 0.5, 2 of 3 seeds
    assert bench.paired_gap_verdict(runs[2:]) is False  # median 0.5, but only 1 seed of 2 is a win
    assert bench.paired_gap_verdict(runs[4:]) is False  # a win, but a median gap of 0.4
    assert bench.paired_gap_verdict(runs[::2]) is None  # no seed has both betas

    def long(seed, beta, overoptimised):
        return {"seed": seed, "beta": beta, "paired_overoptimised": overoptimised}

    verdict = "ppo_gold_declines_without_kl_penalty"
    assert bench.summarise(runs)["verdicts"][verdict] is None  # no run has a paired curve
    declines = [long(7, 0.0, True), long(8, 0.0, False), long(9, 0.0, True), long(7, 1.0, False)]
    assert bench.summarise(declines)["verdicts"][verdict] is True  # 2 of the 3 beta-0 runs; beta 1 ignored
    assert bench.summarise(declines[:2])["verdicts"][verdict] is False  # 1 of 2 is not most


def test_paired_curve_reads_the_gold_peak_and_its_paired_drop_by_hand():
    from rlhf_core.experiments.ppo_overoptimisation import paired_curve
    from rlhf_core.experiments.ppo_overoptimisation.evaluation import _mean_se

    # 4 pairs; the gold rises to step 10 and falls by step 20 while the proxy keeps climbing
    checks = [([0.2, 0.4, 0.3, 0.5], [0.1, 0.3, 0.2, 0.2]),
              ([0.8, 0.9, 1.0, 0.7], [0.5, 0.6, 0.4, 0.7]),
              ([1.5, 1.2, 1.4, 1.3], [0.1, -0.1, 0.2, 0.0])]
    out = paired_curve([5, 10, 20], [2.0, 5.0, 11.0], checks)
    c = out["paired_curve"]
    assert c["step"] == [0, 5, 10, 20] and c["kl"] == [0.0, 2.0, 5.0, 11.0]
    assert c["gold"][0] == 0.0 and c["gold_se"][0] == 0.0 and c["proxy"][0] == 0.0  # the reference
    assert math.isclose(c["gold"][2], 0.55) and math.isclose(c["proxy"][3], 1.35)
    assert math.isclose(c["gold_se"][2], _mean_se([0.5, 0.6, 0.4, 0.7])[1])
    assert out["paired_gold_peak_step"] == 10 and math.isclose(out["paired_gold_peak"], 0.55)
    # the drop's SE is that of the per-pair differences 0.4, 0.7, 0.2, 0.7 (mean 0.5)
    assert math.isclose(out["paired_gold_drop"], 0.5)
    assert math.isclose(out["paired_gold_drop_se"], math.sqrt(sum((x - 0.5) ** 2 for x in (0.4, 0.7, 0.2, 0.7)) / 12))
    assert out["paired_overoptimised"] is True  # 0.5 > 2 x 0.12, proxy 1.35 > 0.85
    # the proxy falling too: not over-optimisation, just a worse policy
    worse = paired_curve([5, 10, 20], [2.0, 5.0, 11.0], checks[:2] + [([0.1] * 4, checks[2][1])])
    assert worse["paired_gold_drop"] == out["paired_gold_drop"] and worse["paired_overoptimised"] is False
    # a gold that never rises: the reference (step 0) is the peak, and falling below it counts
    down = paired_curve([5, 10], [2.0, 5.0], [([0.5] * 4, [-0.2, -0.3, -0.1, -0.2]),
                                              ([1.0] * 4, [-0.6, -0.4, -0.5, -0.7])])
    assert down["paired_gold_peak_step"] == 0 and math.isclose(down["paired_gold_drop"], 0.55)
    assert down["paired_overoptimised"] is True
    # the peak at the last check: no drop
    up = paired_curve([5, 10], [2.0, 5.0], [checks[0], checks[1]])
    assert up["paired_gold_peak_step"] == 10 and up["paired_gold_drop"] == 0.0
    assert up["paired_overoptimised"] is False
    # noise: a drop within 2 SE is not called
    noisy = paired_curve([5, 10], [2.0, 5.0], [([0.5] * 4, [0.6, -0.2, 0.5, -0.1]),
                                               ([1.0] * 4, [0.1, 0.3, -0.3, 0.2])])
    assert noisy["paired_gold_drop"] > 0 and noisy["paired_overoptimised"] is False


@needs_model
def test_paired_eval_along_the_run_samples_the_reference_once(tiny_model, tmp_path, capsys):
    """--paired-eval-every 2 over 4 steps: checks at steps 2 and 4 (the final one), logged at those steps;
    the gains are logged at those steps and the last one is the result's."""
    from rlhf_core.store import Project

    project = tmp_path / "demo.rlhf"
    out = _run_demo(tiny_model, project, capsys, "--steps", "4", "--seed", "2", "--batch-size", "3",
                    "--minibatch-size", "3", "--max-new-tokens", "4", "--eval-prompts", "0",
                    "--paired-eval-every", "2", "--paired-eval-samples", "2", "--learning-rate", "1e-2")
    assert out["status"] == "completed" and out["paired_evaluations"] == 2 and out["paired_n"] == 6
    with Project.open(project) as p:
        metrics = p.metrics(out["run_id"])
    steps, gaps = metrics["eval/paired_goodhart_gap"]
    assert steps == [2, 4] and math.isclose(gaps[-1], out["paired_goodhart_gap"], rel_tol=1e-6)
    assert metrics["eval/paired_proxy_gain"][0] == [2, 4] and metrics["eval/paired_gold_gain"][0] == [2, 4]
    assert math.isclose(metrics["eval/paired_gold_gain_se"][1][-1], out["paired_gold_gain_se"], rel_tol=1e-6)
    # the curve: the reference as the origin, then the two checks at the KL of their rollouts
    curve = out["paired_curve"]
    assert curve["step"] == [0, 2, 4] and curve["gold"][0] == 0.0 and curve["kl"][0] == 0.0
    assert math.isclose(curve["gold"][-1], out["paired_gold_gain"], rel_tol=1e-9)
    assert math.isclose(curve["proxy"][-1], out["paired_proxy_gain"], rel_tol=1e-9)
    assert curve["kl"][1:] == [metrics["kl/seq_mean"][1][metrics["kl/seq_mean"][0].index(s)] for s in (2, 4)]
    assert out["paired_gold_peak_step"] in (0, 2, 4) and out["paired_gold_drop"] >= 0.0
    # lr 1e-2 moves the tiny policy: its responses differ from the reference's
    assert out["paired_identical"] < 1.0


def test_best_of_n_estimator_matches_enumerating_every_subset():
    import itertools as it

    from rlhf_core.experiments.ppo_overoptimisation import best_of_n_curve, best_of_n_expectations, best_of_n_kl

    proxy = [0.3, -1.2, 2.0, 0.9, -0.1, 1.4]
    gold = [1.0, 0.0, -2.0, 0.5, 0.2, 3.0]
    for n in range(1, 7):
        subsets = list(it.combinations(range(6), n))
        picks = [max(sub, key=lambda i: proxy[i]) for sub in subsets]
        want = (sum(proxy[i] for i in picks) / len(picks), sum(gold[i] for i in picks) / len(picks))
        got = best_of_n_expectations(proxy, gold, n)
        assert math.isclose(got[0], want[0], abs_tol=1e-12) and math.isclose(got[1], want[1], abs_tol=1e-12)
    assert best_of_n_expectations(proxy, gold, 6) == (2.0, -2.0)  # the proxy's favourite, whose gold is worst
    with pytest.raises(ValueError):
        best_of_n_expectations(proxy, gold, 7)
    assert best_of_n_kl(1) == 0.0 and math.isclose(best_of_n_kl(4), math.log(4) - 0.75)
    # gold 0.45 at n = 1 (the mean), 0.38 at n = 2 (by hand: the 15 pairs' picks), -2 at n = 6
    assert math.isclose(best_of_n_expectations(proxy, gold, 2)[1], 0.38)
    # two prompts, the second one's gold 1 higher: the curve averages them, the SEs are across prompts
    out = best_of_n_curve([proxy, proxy], [gold, [x + 1.0 for x in gold]], [1, 2, 6])
    c = out["curve"]
    assert c["n"] == [1, 2, 6] and math.isclose(c["proxy"][0], 0.55) and c["proxy_se"] == [0.0, 0.0, 0.0]
    assert [round(v, 9) for v in c["gold"]] == [0.95, 0.88, -1.5]
    assert all(math.isclose(se, 0.5) for se in c["gold_se"])  # values 1 apart: SD sqrt(1/2), over sqrt(2)
    assert out["gold_peak_n"] == 1 and math.isclose(out["gold_peak"], 0.95) and out["gold_last"] == -1.5
    assert math.isclose(out["gold_drop"], 2.45) and out["gold_drop_se"] < 1e-12 and out["proxy_last"] == 2.0
    assert out["overoptimised"] is True  # the drop is certain here (SE 0) and the proxy rose past the peak
    flat = best_of_n_curve([proxy, proxy], [proxy, [x + 1.0 for x in proxy]], [1, 2, 6])  # gold = proxy
    assert flat["gold_peak_n"] == 6 and flat["gold_drop"] == 0.0 and flat["overoptimised"] is False


def test_demo_settings_that_run_nothing_are_refused():
    from rlhf_core.experiments.ppo_overoptimisation import PPODemoConfig

    assert PPODemoConfig(steps=0, bon_samples=0).check() == [
        "nothing to run: steps is 0 (no PPO) and bon_samples is 0 (no best-of-n curve)"]
    assert PPODemoConfig(bon_samples=1).check() == ["bon_samples must be 0 (off) or at least 2"]
    assert PPODemoConfig(steps=0, bon_samples=8).check() == []


@needs_model
def test_best_of_n_only_run_logs_the_curve_from_the_reference(tiny_model, tmp_path, capsys):
    """--steps 0 --bon-samples 4: no PPO; the curve starts at exactly 0 (n = 1 is the reference's own mean)
    and the proxy's expectation cannot fall as n grows."""
    from rlhf_core.store import Project

    project = tmp_path / "demo.rlhf"
    out = _run_demo(tiny_model, project, capsys, "--steps", "0", "--bon-samples", "4", "--seed", "1",
                    "--max-new-tokens", "5")
    assert out["status"] == "completed" and out["steps"] == 0 and "reward_last" not in out
    c = out["bon_curve"]
    assert c["n"] == [1, 2, 4] and out["bon_samples"] == 4 and 1.0 <= out["bon_mean_length"] <= 5.0
    assert abs(c["proxy"][0]) < 1e-6 and abs(c["gold"][0]) < 1e-6 and c["kl"][0] == 0.0
    assert c["proxy"][0] <= c["proxy"][1] + 1e-9 <= c["proxy"][2] + 2e-9
    assert math.isclose(c["sqrt_kl"][2], math.sqrt(math.log(4) - 0.75))
    # the gold's peak and its drop to the largest n, read off the curve
    peak = max(range(3), key=lambda i: c["gold"][i])
    assert out["bon_gold_peak_n"] == c["n"][peak] and out["bon_gold_last"] == c["gold"][2]
    assert math.isclose(out["bon_gold_drop"], c["gold"][peak] - c["gold"][2], abs_tol=1e-9)
    assert out["bon_overoptimised"] == (out["bon_gold_drop"] > 2 * out["bon_gold_drop_se"]
                                        and c["proxy"][2] > c["proxy"][peak])
    with Project.open(project) as p:
        metrics = p.metrics(out["run_id"])
    assert metrics["bon/proxy"][0] == [1, 2, 4] and "reward/model" not in metrics
    assert math.isclose(metrics["bon/proxy"][1][2], c["proxy"][2], rel_tol=1e-6)
