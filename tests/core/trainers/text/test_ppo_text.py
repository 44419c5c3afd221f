"""PPO for text with a per-token KL penalty: the pieces by hand, then the trainer and the job on a tiny Llama."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rlhf_core import config as cfg
from rlhf_core.jobs import RecordingContext, execute_job, get_job
from rlhf_core.trainers.text.ppo import (
    AdaptiveKLController,
    FixedKLController,
    PPOTextConfig,
    PPOTextTrainer,
    gae,
    policy_loss,
    run_ppo,
    shaped_rewards,
    value_loss,
    whiten,
)
from rlhf_core.text.rl_common import load_policy, render_chat_prompt, tokenize_prompts
from tests.conftest import needs_model



# ------------------------------------------------------------------------------- by hand
def test_gae_matches_a_hand_computation():
    rewards = torch.tensor([[0.1, -0.2, 1.0], [0.5, 2.0, 9.0]])
    values = torch.tensor([[0.3, 0.4, 0.5], [1.0, -1.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # row 1 has two tokens; column 2 is padding
    gamma, lam = 0.9, 0.5
    adv, ret = gae(rewards, values, mask, gamma, lam)
    # row 0: deltas with V after the last token = 0
    d2 = 1.0 + 0.0 - 0.5
    d1 = -0.2 + 0.9 * 0.5 - 0.4
    d0 = 0.1 + 0.9 * 0.4 - 0.3
    a2 = d2
    a1 = d1 + 0.45 * a2
    a0 = d0 + 0.45 * a1
    # row 1: the padding's reward 9 and value 7 must not leak in
    e1 = 2.0 + 0.0 - (-1.0)
    e0 = 0.5 + 0.9 * (-1.0) - 1.0
    b1 = e1
    b0 = e0 + 0.45 * b1
    expected = torch.tensor([[a0, a1, a2], [b0, b1, 0.0]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, (expected + values) * mask)
    # gamma = lambda = 1 and zero values: the advantage is the reward-to-go
    adv1, _ = gae(rewards, torch.zeros_like(values), mask, 1.0, 1.0)
    torch.testing.assert_close(adv1[0], torch.tensor([0.9, 0.8, 1.0]))


def test_clipped_policy_loss_matches_a_hand_computation():
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.7]]))  # ratios 1.5, 0.5, 1.1, 0.7
    adv = torch.tensor([[1.0, 1.0, -2.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the last token is padding
    loss, clip_fraction, approx_kl = policy_loss(logp, old, adv, mask, cliprange=0.2)
    # token 0: A>0, ratio 1.5 -> clipped to 1.2: max(-1.5, -1.2) = -1.2 (clipped term active)
    # token 1: A>0, ratio 0.5 -> clip 0.8: max(-0.5, -0.8) = -0.5 (unclipped: pessimistic bound)
    # token 2: A<0, ratio 1.1 inside the range: 2.2
    assert math.isclose(float(loss), (-1.2 - 0.5 + 2.2) / 3, rel_tol=1e-6)
    assert math.isclose(clip_fraction, 1 / 3, rel_tol=1e-6)
    lr = [math.log(1.5), math.log(0.5), math.log(1.1)]
    assert math.isclose(approx_kl, sum(0.5 * x * x for x in lr) / 3, rel_tol=1e-5)


def test_clipped_value_loss_and_shaped_rewards_by_hand():
    values = torch.tensor([[1.0, 0.0]])
    old = torch.tensor([[0.0, 0.0]])
    returns = torch.tensor([[2.0, 0.5]])
    mask = torch.ones(1, 2)
    # token 0: unclipped (1-2)^2 = 1; clipped V = 0.2 -> (0.2-2)^2 = 3.24 -> max 3.24; token 1: 0.25
    assert math.isclose(float(value_loss(values, old, returns, mask, 0.2)), 0.5 * (3.24 + 0.25) / 2, rel_tol=1e-6)
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-0.5, -1.0, 0.0]])
    m = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, kl = shaped_rewards(torch.tensor([3.0, -1.0]), logp, ref, m, beta=0.1)
    torch.testing.assert_close(kl, torch.tensor([[0.5, 0.0, -1.0], [-0.5, 0.0, 0.0]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.0, 0.1 + 3.0], [0.05, -1.0, 0.0]]))


def test_whitening_gives_zero_mean_unit_std_on_real_tokens():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    w = whiten(x, m)
    real = w[m.bool()]
    assert abs(float(real.mean())) < 1e-6 and math.isclose(float(real.pow(2).mean()), 1.0, rel_tol=1e-4)
    assert float(w[1, 1:].abs().sum()) == 0.0


def test_adaptive_kl_controller_moves_beta_towards_the_target():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=100.0)
    ctl.update(12.0, 10)  # KL twice the target: error clipped at +0.2 -> beta * (1 + 0.2 * 10 / 100)
    assert math.isclose(ctl.beta, 0.1 * 1.02)
    ctl.update(5.4, 10)  # below the target: error -0.1 -> beta falls
    assert math.isclose(ctl.beta, 0.1 * 1.02 * (1 - 0.1 * 10 / 100))
    ctl.update(6.0, 10)  # on target: unchanged
    assert math.isclose(ctl.beta, 0.1 * 1.02 * 0.99)
    fixed = FixedKLController(0.05)
    assert fixed.update(100.0, 10) == 0.05
    with pytest.raises(ValueError):
        AdaptiveKLController(0.1, target=0.0, horizon=10)


def test_bad_config_values_are_refused():
    good = PPOTextConfig(reward_model="x")
    cfg.validate(good)
    with pytest.raises(cfg.ConfigError, match="choose a reward"):
        cfg.validate(PPOTextConfig())
    with pytest.raises(cfg.ConfigError, match="minibatch_size"):
        cfg.validate(PPOTextConfig(reward_model="x", batch_size=2, minibatch_size=4))
    with pytest.raises(cfg.ConfigError, match="cliprange"):
        cfg.validate(PPOTextConfig(reward_model="x", cliprange=0.0))
    with pytest.raises(cfg.ConfigError, match="unknown reward"):
        cfg.validate(PPOTextConfig(reward="niceness:1"))
    with pytest.raises(cfg.ConfigError, match="value_backbone"):
        cfg.validate(PPOTextConfig(reward_model="x", value_backbone="separate"))
    assert get_job("ppo_text").config_class() is PPOTextConfig


# ------------------------------------------------------------------------------- on the tiny model
def _first_token_probability(setup, prompt: str, token: int, temperature: float) -> float:
    ids = torch.tensor(tokenize_prompts(setup.tokenizer, [render_chat_prompt(setup.tokenizer, prompt)]))
    with torch.no_grad():
        logits = setup.model(input_ids=ids).logits[0, -1].float() / temperature
    return float(torch.softmax(logits, -1)[token])


@needs_model
def test_reward_rises_on_an_easy_target_and_kl_starts_at_zero(tiny_model):
    """Reward 1 when the completion starts with the policy's most likely first token (p ~ 0.3 at T = 0.5)."""
    torch.manual_seed(0)
    setup = load_policy(str(tiny_model), need_reference=True)
    prompt = "Say hi."
    ids = torch.tensor(tokenize_prompts(setup.tokenizer, [render_chat_prompt(setup.tokenizer, prompt)]))
    with torch.no_grad():
        target = int(setup.model(input_ids=ids).logits[0, -1].argmax())
    word = setup.tokenizer.decode([target])
    p_before = _first_token_probability(setup, prompt, target, 0.5)

    def reward(prompts, responses, metas):
        return {"target": torch.tensor([1.0 if r.startswith(word) else 0.0 for r in responses])}

    config = PPOTextConfig(reward_model="(python)", steps=3, batch_size=8, minibatch_size=8, ppo_epochs=2,
                           max_new_tokens=3, temperature=0.5, learning_rate=1e-3, value_learning_rate=1e-2,
                           beta=0.0, seed=1)
    ctx = RecordingContext()
    result = run_ppo(PPOTextTrainer(setup, [prompt], reward, config), ctx)
    p_after = _first_token_probability(setup, prompt, target, 0.5)
    steps, kl = ctx.series("kl/token_mean")
    assert steps[0] == 0 and kl[0] == 0.0 and ctx.series("kl/seq_mean")[1][0] == 0.0
    assert 0.15 < p_before < 0.5
    assert p_after > p_before + 0.25, (p_before, p_after)
    rewards = ctx.series("reward/mean")[1]
    assert len(rewards) == config.steps + 1 and result["reward_last"] == rewards[-1]
    assert sum(rewards[-2:]) / 2 > sum(rewards[:2]) / 2
    assert ctx.series("kl/seq_mean")[1][-1] > 0.0  # the policy moved away from the reference
    assert len(ctx.series("train/loss")[1]) == config.steps  # no update after the last rollout


@needs_model
def test_value_loss_decreases_on_a_fixed_batch(tiny_model):
    torch.manual_seed(0)
    setup = load_policy(str(tiny_model), need_reference=True)

    def reward(prompts, responses, metas):
        return {"length": torch.tensor([float(len(r)) / 10.0 for r in responses])}

    config = PPOTextConfig(reward_model="(python)", batch_size=4, minibatch_size=4, ppo_epochs=1, max_new_tokens=4,
                           learning_rate=1e-6, value_learning_rate=3e-2, value_backbone="detached", beta=0.1,
                           cliprange_value=100.0)  # no value clipping: it stalls the loss once V leaves V_old +- eps
    trainer = PPOTextTrainer(setup, ["Say hi.", "Name a fruit."], reward, config)
    rollout = trainer.rollout(0)
    losses = [trainer.update(rollout)["train/value_loss"] for _ in range(5)]
    assert losses[0] > 0
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.3 * losses[0], losses


@needs_model
def test_lora_policy_starts_at_zero_kl_and_moves_only_adapters(tiny_model):
    torch.manual_seed(0)
    setup = load_policy(str(tiny_model), lora_rank=4, need_reference=True)
    assert setup.reference is None  # the reference is the same network with its adapters off
    base = {n: p.detach().clone() for n, p in setup.model.named_parameters() if not p.requires_grad}
    config = PPOTextConfig(reward_model="(python)", batch_size=4, minibatch_size=4, ppo_epochs=1, max_new_tokens=3,
                           learning_rate=1e-2, beta=0.1)
    trainer = PPOTextTrainer(setup, ["Say hi."], lambda p, r, m: {"x": torch.arange(len(r), dtype=torch.float)},
                             config)
    first = trainer.rollout(0)
    assert float(first.kl.abs().sum()) == 0.0
    trainer.update(first)
    second = trainer.rollout(1)
    assert float(second.kl.abs().sum()) > 0.0
    assert all(torch.equal(p, base[n]) for n, p in setup.model.named_parameters() if n in base)


def _tiny_reward_model(tiny_model, folder):
    from rlhf_core.text.reward_model import load_base_reward_model, save_text_reward_model

    model, _, _ = load_base_reward_model(str(tiny_model), max_length=64, seed=0)
    save_text_reward_model(model, folder, meta={"base_model": "tiny"})
    return folder


@needs_model
def test_the_job_logs_every_key_saves_a_checkpoint_and_adapts_beta(tiny_model, tmp_path, project):
    rm = _tiny_reward_model(tiny_model, project.folder / "models" / "rm")
    # register the reward model as a checkpoint of the project: the job takes its id
    cid = project.add_checkpoint(None, "text_reward_model", rm, step=0)
    pids = [project.add_prompt(t) for t in ("Say hi.", "Name a fruit.", "What is 2+2?")]
    config = PPOTextConfig(model=str(tiny_model), reward_model=str(cid), gold_reward_model=str(rm), prompt_set="",
                           prompt_ids=pids, steps=2, batch_size=4, minibatch_size=2, ppo_epochs=1, max_new_tokens=4,
                           reward="model:2,length:0.01", beta=0.1, adaptive_kl=True, kl_target=6.0, kl_horizon=40.0,
                           reward_baseline="batch", save=True)
    ctx = RecordingContext()
    outcome = execute_job(get_job("ppo_text"), config, ctx, project_path=project.folder)
    assert outcome.status == "completed", outcome.error
    first = ctx.metric_log[0]
    assert first[0] == 0
    keys = {"reward/mean", "reward/std", "reward/model", "kl/token_mean", "kl/seq_mean", "kl/beta",
            "completions/mean_length", "completions/min_length", "completions/max_length",
            "completions/stopped_fraction", "train/loss", "train/value_loss", "train/clip_fraction", "train/entropy", "train/grad_norm", "gold/reward", "memory/peak_rss_mb"}
    assert keys <= set(first[1])
    assert first[1]["kl/token_mean"] == 0.0 and first[1]["kl/seq_mean"] == 0.0
    # the reward model is standardised on the first batch: mean 0 there (gold is the same model here)
    assert abs(first[1]["reward/model"]) < 1e-5 and abs(first[1]["gold/reward"]) < 1e-5
    # the spec's length penalty (minus completion tokens, end token included) is added to the model's score
    assert math.isclose(first[1]["reward/length_penalty"], -0.01 * first[1]["completions/mean_length"],
                        rel_tol=1e-6)
    assert math.isclose(first[1]["reward/mean"], first[1]["reward/length_penalty"], rel_tol=1e-5, abs_tol=1e-6)
    # adaptive beta: KL 0 < target at step 0 -> beta * (1 - 0.2 * 4 / 40)
    betas = ctx.series("kl/beta")[1]
    assert betas[0] == 0.1 and math.isclose(betas[1], 0.1 * (1 - 0.2 * 4 / 40), rel_tol=1e-9)
    samples = [s for s in ctx.sample_log if s[0] == "text_rl"]
    assert len(samples) == 3 * 3 and {"prompt", "response", "reward", "components", "length", "gold"} <= set(
        samples[0][1])
    result = outcome.result
    assert result["kl_first"] == 0.0 and "checkpoint_id" in result
    from rlhf_core.store import Project

    with Project.open(project.folder) as p2:
        row = [c for c in p2.checkpoints(outcome.run_id) if c["kind"] == "text_policy"][0]
        folder = p2.abspath(row["path"])
        stored = p2.metrics(outcome.run_id)
    assert (folder / "model.safetensors").is_file() and (folder / "value_head.safetensors").is_file()
    assert json.loads((folder / "workbench_policy.json").read_text())["job"] == "ppo_text"
    assert stored["kl/token_mean"][1][0] == 0.0 and len(stored["reward/mean"][0]) == 3
    reloaded = load_policy(str(folder), need_reference=False)
    assert reloaded.model.config.hidden_size == 64


@needs_model
def test_cancel_stops_the_job(tiny_model, tmp_path, project):
    rm = _tiny_reward_model(tiny_model, tmp_path / "rm")
    config = PPOTextConfig(model=str(tiny_model), reward_model=str(rm), prompt_set="lecture", steps=50, batch_size=2,
                           minibatch_size=2, ppo_epochs=1, max_new_tokens=3, save=True)
    ctx = RecordingContext(cancel_after_metrics=2)
    outcome = execute_job(get_job("ppo_text"), config, ctx, project_path=project.folder)
    assert outcome.status == "cancelled"
    assert [s for s, _ in ctx.metric_log] == [0, 1]
    with pytest.raises(ValueError, match="checkpoint"):
        from rlhf_core.text.reward_model import resolve_reward_model

        resolve_reward_model("9999", None)


@needs_model
def test_per_prompt_baseline_centres_each_prompt_on_its_reference_samples(tiny_model, tmp_path):
    from rlhf_core.trainers.text.ppo import RewardModelScorer
    from rlhf_core.text.reward_model import load_text_reward_model

    model, tok = load_text_reward_model(_tiny_reward_model(tiny_model, tmp_path / "rm"))
    prompts = ["Say hi."] * 3 + ["Name a fruit."] * 4
    responses = ["hi", "hello there", "hey", "apple", "a pear", "banana", "kiwi fruit"]
    scorer = RewardModelScorer(model=model, tokenizer=tok)
    raw = scorer.raw(prompts, responses).double()
    info = scorer.calibrate_per_prompt(prompts, responses)
    assert info["prompts"] == 2 and math.isclose(info["offset"], float(raw.mean()), rel_tol=1e-6, abs_tol=1e-9)
    centred = scorer(prompts, responses).double()
    # each prompt's reference samples average 0; the pooled within-prompt variance (n - 1 per prompt) is 1
    assert abs(float(centred[:3].mean())) < 1e-5 and abs(float(centred[3:].mean())) < 1e-5
    pooled = (float(((centred[:3] - centred[:3].mean()) ** 2).sum()) + float(((centred[3:] - centred[3:].mean()) ** 2)
                                                                            .sum())) / (2 + 3)
    assert math.isclose(pooled, 1.0, rel_tol=1e-4)
    # a prompt it has not seen is centred on the overall mean, with the same scale
    unseen = scorer(["What is 2+2?"], ["four"]).double()
    expect = (scorer.raw(["What is 2+2?"], ["four"]).double() - info["offset"]) / info["scale"]
    assert torch.allclose(unseen, expect, atol=1e-6)
    # the gap between two answers to one prompt keeps its sign and is divided by the within-prompt spread
    assert math.isclose(float(centred[0] - centred[1]), float(raw[0] - raw[1]) / info["scale"], rel_tol=1e-4)


@needs_model
def test_the_job_centres_the_reward_model_per_prompt_on_fresh_reference_samples(tiny_model, tmp_path, project):
    """reward_baseline = prompt: before step 0 the untouched policy answers every prompt baseline_samples
    times; each completion's model reward is (raw - that prompt's reference mean) / pooled spread."""
    from rlhf_core.trainers.text.ppo import RewardModelScorer, calibrate_on_reference, ppo_prompts
    from rlhf_core.text.reward_model import load_text_reward_model

    rm = _tiny_reward_model(tiny_model, tmp_path / "rm")
    pids = [project.add_prompt(t) for t in ("Say hi.", "Name a fruit.", "What is 2+2?")]
    config = PPOTextConfig(model=str(tiny_model), reward_model=str(rm), prompt_set="", prompt_ids=pids, steps=1,
                           batch_size=3, minibatch_size=3, ppo_epochs=1, max_new_tokens=5, beta=0.1,
                           baseline_samples=3, samples_per_step=3, seed=2)
    assert config.reward_baseline == "prompt"  # the default
    ctx = RecordingContext()
    outcome = execute_job(get_job("ppo_text"), config, ctx, project_path=project.folder)
    assert outcome.status == "completed", outcome.error
    result = outcome.result
    assert result["baseline_prompts"] == 3 and result["baseline_scale"] > 0
    # the same calibration, redone outside the job (same seeds, same untouched policy), gives the same numbers
    model, tok = load_text_reward_model(rm)
    scorer = RewardModelScorer(model=model, tokenizer=tok)
    setup = load_policy(str(tiny_model), need_reference=False)
    trainer_settings = PPOTextTrainer(setup, ["x"], lambda p, r, m: {}, config).settings
    lookup = RecordingContext()
    lookup.project_path = project.folder
    prompts, _ = ppo_prompts(config, lookup)  # the job's (seeded) prompt order: the sampling seeds follow it
    assert sorted(prompts) == sorted(["Say hi.", "Name a fruit.", "What is 2+2?"])
    info = calibrate_on_reference(scorer, setup, prompts, 3, trainer_settings, config.seed)
    assert info["prompts"] == 3 and set(scorer.prompt_offsets) == set(prompts)
    assert math.isclose(info["scale"], result["baseline_scale"], rel_tol=1e-5)
    assert math.isclose(info["offset"], result["baseline_offset"], rel_tol=1e-5, abs_tol=1e-7)
    # the step-0 completions' model reward is their raw score minus their own prompt's reference mean
    step0 = [payload for kind, payload, *_ in ctx.sample_log if kind == "text_rl" and payload["step"] == 0]
    assert len(step0) == 3
    raw = scorer.raw([s["prompt"] for s in step0], [s["response"] for s in step0]).tolist()
    for sample, r in zip(step0, raw):
        expect = (r - scorer.prompt_offsets[sample["prompt"]]) / info["scale"]
        assert math.isclose(sample["components"]["model"], expect, rel_tol=1e-4, abs_tol=1e-5)
    # the baseline is a function of the prompt: it differs between prompts (else it would be the batch mean)
    assert len({round(v, 6) for v in scorer.prompt_offsets.values()}) == 3


def test_a_prompt_baseline_needs_normalised_scores():
    with pytest.raises(ValueError, match="normalize_reward"):
        cfg.validate(PPOTextConfig(reward_model="x", normalize_reward=False))
    cfg.validate(PPOTextConfig(reward_model="x", normalize_reward=False, reward_baseline="batch"))
    cfg.validate(PPOTextConfig(reward="length:0.01", normalize_reward=False))  # no reward model: nothing to centre
