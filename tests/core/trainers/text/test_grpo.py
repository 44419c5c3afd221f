"""GRPO: advantages and loss by hand, and the trainer on a tiny Llama (real SmolLM2 tokenizer)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rlhf_core import config as cfg
from rlhf_core.jobs import JobCancelled, RecordingContext, execute_job, get_job
from rlhf_core.trainers.text.grpo import GRPOConfig, group_advantages, grpo_loss, train_grpo
from rlhf_core.text.rewards import CombinedReward
from tests.conftest import needs_model


METRIC_KEYS = {"reward/mean", "reward/std", "reward/format", "reward/correctness", "kl/token_mean", "kl/seq_mean",
               "kl/beta", "completions/mean_length", "completions/min_length", "completions/max_length",
               "completions/stopped_fraction", "train/loss", "train/entropy", "train/clip_fraction", "train/grad_norm", "gold/reward", "memory/peak_rss_mb",
               "time/steps_per_second"}


def _quick(tiny_model, **changes) -> GRPOConfig:
    base = dict(model=str(tiny_model), steps=2, prompts_per_step=2, group_size=3, max_new_tokens=6, train_tasks=6,
                heldout_tasks=2, eval_every=0, few_shot=False, save=False, learning_rate=1e-4, temperature=1.0)
    return cfg.from_dict(GRPOConfig, {**base, **changes})


# ------------------------------------------------------------------------------- by hand
def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])
    adv = group_advantages(rewards, 4, scale=True)
    std = math.sqrt((0.75 ** 2 + 3 * 0.25 ** 2) / 3)  # sample std (n - 1), as TRL
    expected = [0.75 / (std + 1e-4)] + [-0.25 / (std + 1e-4)] * 3 + [0.0] * 4  # equal rewards: no signal
    assert adv.tolist() == pytest.approx(expected, abs=1e-6)
    assert group_advantages(rewards, 4, scale=False).tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0])
    assert group_advantages(rewards, 2, scale=False).tolist() == pytest.approx([0.5, -0.5, 0, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError):
        group_advantages(rewards, 3)


def test_loss_clipping_kl_and_aggregation_by_hand():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, 0.0]], requires_grad=True)
    old = torch.tensor([[-1.5, -1.9, -0.5], [-0.3, -0.6, 0.0]])
    ref = torch.tensor([[-1.2, -2.0, -0.4], [-0.5, -1.0, 0.0]])
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    eps, beta = 0.2, 0.1

    def per_token(i, t):
        ratio = math.exp(logp[i, t].item() - old[i, t].item())
        a = adv[i].item()
        clipped = min(max(ratio, 1 - eps), 1 + eps)
        d = ref[i, t].item() - logp[i, t].item()
        return -min(ratio * a, clipped * a) + beta * (math.exp(d) - d - 1)

    tokens = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    token_loss = sum(per_token(i, t) for i, t in tokens) / 5
    seq_loss = ((per_token(0, 0) + per_token(0, 1) + per_token(0, 2)) / 3 + (per_token(1, 0) + per_token(1, 1)) / 2) / 2
    parts = grpo_loss(logp, old, ref, adv, mask, epsilon=eps, beta=beta, aggregation="token")
    assert float(parts.loss.detach()) == pytest.approx(token_loss, abs=1e-6)
    seq = grpo_loss(logp, old, ref, adv, mask, epsilon=eps, beta=beta, aggregation="sequence")
    assert float(seq.loss.detach()) == pytest.approx(seq_loss, abs=1e-6)
    # clipped: (0,0) ratio e^0.5 > 1.2 with A > 0; (1,1) ratio e^-0.6 < 0.8 with A < 0; the others are inside
    assert parts.clip_fraction == pytest.approx(2 / 5)
    k3 = [math.exp(ref[i, t].item() - logp[i, t].item()) - (ref[i, t].item() - logp[i, t].item()) - 1 for i, t in tokens]
    assert parts.kl_token_mean == pytest.approx(sum(k3) / 5, abs=1e-6)
    assert parts.kl_seq_mean == pytest.approx((sum(k3[:3]) + sum(k3[3:])) / 2, abs=1e-6)
    with pytest.raises(ValueError):
        grpo_loss(logp, old, None, adv, mask, beta=0.1)

    # mu = 1: old = logp.detach(), the ratio is 1 and the gradient is -A / N per token (no KL gradient at ref = pi)
    logp2 = logp.detach().clone().requires_grad_(True)
    grpo_loss(logp2, logp2.detach(), logp2.detach(), adv, mask, beta=beta).loss.backward()
    torch.testing.assert_close(logp2.grad, torch.tensor([[-1 / 5] * 3, [2 / 5, 2 / 5, 0.0]]))


def test_bad_settings_are_refused():
    for bad in (dict(group_size=1), dict(loss_aggregation="mean"), dict(temperature=0.0), dict(epsilon=0.0),
                dict(reward="format:1,nonsense:2"), dict(reward="model:1"), dict(prompt_source="web"),
                dict(task_level=5), dict(beta=-0.1), dict(mu=0)):
        with pytest.raises(cfg.ConfigError):
            cfg.from_dict(GRPOConfig, bad)
    assert cfg.from_dict(GRPOConfig, dict(reward="model:1", reward_model="/some/folder")).reward == "model:1"


# ------------------------------------------------------------------------------- the trainer
class Constant:
    name = "constant"

    def __call__(self, prompts, completions, metas):
        return [0.5] * len(completions)


@needs_model
@pytest.mark.parametrize("shared_prompt_forward", [True, False])
def test_step_zero_has_zero_kl_every_key_and_the_hand_computed_loss(tiny_model, shared_prompt_forward):
    config = _quick(tiny_model, samples_per_step=6, beta=0.5, max_new_tokens=5,
                    shared_prompt_forward=shared_prompt_forward)
    ctx = RecordingContext()
    res = train_grpo(config, ctx)
    step0 = [v for s, v in ctx.metric_log if s == 0 and "reward/mean" in v][0]
    assert METRIC_KEYS <= set(step0)
    assert step0["kl/token_mean"] == 0.0 and step0["kl/seq_mean"] == 0.0 and step0["kl/beta"] == 0.5
    assert step0["train/clip_fraction"] == 0.0
    # token aggregation with ratio 1 and KL 0 at step 0: loss = -sum_i A_i * n_i / sum_i n_i
    rows = [p for kind, p, s in ctx.sample_log if s == 0 and kind == "text_rl"]
    assert len(rows) == 6
    expected = -sum(r["advantage"] * r["length"] for r in rows) / sum(r["length"] for r in rows)
    assert step0["train/loss"] == pytest.approx(expected, abs=1e-5)
    assert step0["completions/max_length"] == max(r["length"] for r in rows)
    assert step0["completions/max_length"] <= 6  # 5 + end token
    assert step0["reward/mean"] == pytest.approx(sum(r["reward"] for r in rows) / 6)
    for r in rows:
        assert r["reward"] == pytest.approx(sum(r["components"].values()))
        assert set(r["components"]) == {"format", "correctness"} and r["gold"] is not None
    # gold accuracy before and after, the first/last summary
    steps, acc = ctx.series("gold/accuracy")
    assert steps == [0, 2] and all(0.0 <= a <= 1.0 for a in acc)
    assert res["reward_first"] == step0["reward/mean"] and res["kl_first"] == 0.0
    assert res["steps"] == 2 and res["heldout_prompts"] == 2 and res["train_prompts"] == 6
    # the advantages and the reward spread from the rows' own rewards (the rows are every sample: 2 groups of 3)
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["prompt"], []).append(r)
    assert sorted(len(g) for g in groups.values()) == [3, 3]
    for g in groups.values():
        want = group_advantages(torch.tensor([r["reward"] for r in g]), 3).tolist()
        assert [r["advantage"] for r in g] == pytest.approx(want, abs=1e-5)
    assert step0["reward/std"] == pytest.approx(float(torch.tensor([r["reward"] for r in rows]).std()), abs=1e-6)
    # sequence aggregation: -mean(A) = 0 at step 0 (advantages sum to 0 in each group); with equal rewards every
    # advantage is 0, and with the KL gradient 0 at pi = pi_ref the first update leaves the policy where it was
    seq_ctx = RecordingContext()
    train_grpo(cfg.replace(config, loss_aggregation="sequence", heldout_tasks=0), seq_ctx,
               reward=CombinedReward([(Constant(), 1.0)]))
    assert seq_ctx.series("train/loss")[1][0] == pytest.approx(0.0, abs=1e-6)
    assert seq_ctx.series("reward/std")[1][0] == 0.0 and seq_ctx.series("kl/token_mean")[1][1] == 0.0


@needs_model
def test_reward_rises_on_an_easy_target(tiny_model):
    """A one-token bandit: reward 1 for any of the tokens that make up 30 % of the untrained model's mass."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf_core.text.gold_eval import task_prompts
    from rlhf_core.text.tasks import render_task_prompt

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    prompt = task_prompts(1, 1, 0, 0)[0][0].text
    ids = tok(render_task_prompt(tok, prompt, False), add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        probs = torch.softmax(model(ids).logits[0, -1].float(), -1)
    order = torch.argsort(probs, descending=True)
    k = int((torch.cumsum(probs[order], 0) < 0.3).sum()) + 1
    targets = {tok.decode([int(i)]) for i in order[:k]}

    class Bandit:
        name = "target"

        def __call__(self, prompts, completions, metas):
            return [float(c in targets) for c in completions]

    # 24 steps: on one CPU 12 were enough (last 4 >= 0.7), on another the same seed needed 15 (float
    # rounding differs between CPUs and sampling amplifies it); both end at 0.875-1.0 by step 24
    config = _quick(tiny_model, steps=24, prompts_per_step=1, group_size=8, max_new_tokens=1, train_tasks=1,
                    heldout_tasks=0, learning_rate=1e-3, beta=0.0)
    ctx = RecordingContext()
    res = train_grpo(config, ctx, reward=CombinedReward([(Bandit(), 1.0)]))
    _, rewards = ctx.series("reward/mean")
    assert len(rewards) == 24
    assert sum(rewards[-4:]) / 4 >= 0.7, rewards
    assert sum(rewards[-4:]) / 4 > sum(rewards[:4]) / 4 + 0.4, rewards
    assert res["reward_last_window"] > res["reward_first_window"] + 0.3


@needs_model
def test_project_prompts_with_gold_answers_checkpoint_and_cancel(project, tiny_model):
    golds = {"What is 12 + 30?": "42", "What is 5 times 6?": "30", "How many legs does a cat have?": "4",
             "What is 100 - 1?": "99"}
    for text, gold in golds.items():
        project.add_prompt(text, category="reasoning", gold_answer=gold)
    project.add_prompt("Write a poem about the sea.")  # no gold answer: not used with the correctness reward
    gone = project.add_prompt("What is 1 + 1?", gold_answer="2")
    project.conn.execute("UPDATE prompts SET deleted_at='2026-01-01' WHERE id=?", [gone])
    config = _quick(tiny_model, prompt_source="project", heldout_fraction=0.25, steps=2, save=True)
    ctx = RecordingContext()
    out = execute_job(get_job("grpo"), config, ctx, project_path=project.folder)
    assert out.status == "completed", out.error
    res = out.result
    assert res["train_prompts"] == 3 and res["heldout_prompts"] == 1
    used = {p["prompt"] for _, p, _ in ctx.sample_log}
    assert used and used <= set(golds)  # only live prompts with gold answers
    assert {p["gold"] for _, p, _ in ctx.sample_log} <= set(golds.values())
    ckpts = project.checkpoints(out.run_id)
    assert [c["kind"] for c in ckpts] == ["text_policy"] and ckpts[0]["step"] == 2
    folder = project.abspath(ckpts[0]["path"])
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert json.loads((folder / "workbench_policy.json").read_text())["algorithm"] == "grpo"
    stored = project.metrics(out.run_id)
    assert stored["kl/token_mean"][1][0] == 0.0 and len(stored["reward/mean"][0]) == 2
    assert [s["payload"]["step"] for s in project.samples(out.run_id, "text_rl")] == [0, 0, 1, 1]

    # cancel: stopped at the next step boundary, nothing saved
    cancel_ctx = RecordingContext(cancel_after_metrics=2)  # gold/accuracy at step 0, then step 0's metrics
    cancelled = execute_job(get_job("grpo"), cfg.replace(config, steps=5), cancel_ctx, project_path=project.folder)
    assert cancelled.status == "cancelled"
    assert len(cancel_ctx.series("reward/mean")[1]) == 1
    assert project.checkpoints(cancelled.run_id) == []
    with pytest.raises(JobCancelled):
        train_grpo(_quick(tiny_model), RecordingContext(cancel_after_metrics=1))

    # no gold answers at all: a clear message
    project.conn.execute("UPDATE prompts SET gold_answer=NULL")
    failed = execute_job(get_job("grpo"), config, RecordingContext(), project_path=project.folder)
    assert failed.status == "failed" and "no prompts with a gold answer" in failed.error


@needs_model
def test_cli_demo_grpo_prints_the_promised_keys(tiny_model, capsys):
    from rlhf_core.cli import main

    for job in ("grpo", "dpo", "grpo_demo"):  # every setting renders (a `threads` field has its own flag)
        assert main(["run", job, "--help"]) == 0
    assert "--threads THREADS" in capsys.readouterr().out
    code = main(["demo", "grpo", "--model", str(tiny_model), "--steps", "2", "--seed", "3", "--heldout-tasks", "2",
                 "--max-new-tokens", "4", "--threads", "1"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("reward_first", "reward_last", "kl_last", "mean_length_first", "mean_length_last", "wall_seconds",
                "gold_accuracy_first", "gold_accuracy_last"):
        assert out[key] is not None, key
    assert out["status"] == "completed" and out["job"] == "grpo_demo" and out["steps"] == 2 and out["seed"] == 3
    assert 1.0 <= out["mean_length_first"] <= 4.0 and out["threads"] == 1 and out["window"] == 1


@needs_model
def test_lora_policy_starts_at_the_adapter_free_reference_and_mu_passes_clip(tiny_model):
    """LoRA: KL 0 at step 0 against the model with adapters off; mu = 3 passes move the ratio off 1."""

    class Spread:
        name = "spread"

        def __call__(self, prompts, completions, metas):
            return [float(len(c)) / 10.0 for c in completions]  # differs between completions: non-zero advantages

    config = _quick(tiny_model, lora_rank=4, learning_rate=5e-2, mu=3, steps=2, heldout_tasks=0, beta=0.1,
                    gradient_checkpointing=False)
    ctx = RecordingContext()
    res = train_grpo(config, ctx, reward=CombinedReward([(Spread(), 1.0)]))
    assert res["lora"] is True
    _, kl = ctx.series("kl/token_mean")
    assert kl[0] == 0.0 and kl[1] > 0.0
    _, clip = ctx.series("train/clip_fraction")
    assert clip[0] > 0.0  # after two updates on the same batch some ratios left [1 - eps, 1 + eps]


@needs_model
def test_shared_prompt_forward_equals_the_plain_forward_with_gradients(tiny_model):
    from rlhf_core.text.rl_common import grouped_logprobs
    from rlhf_core.text.rl_common import build_batch, completion_logprobs, load_policy, response_ids, tokenize_prompts
    from rlhf_core.text.tasks import render_task_prompt

    setup = load_policy(str(tiny_model), lora_rank=4)
    model, tok = setup.model, setup.tokenizer
    with torch.no_grad():  # LoRA B starts at 0: move it so the adapters matter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(0.1)
    rendered = [render_task_prompt(tok, "What is 2 + 3?"), render_task_prompt(tok, "Mia has 4 pens. How many now?")]
    prompts = tokenize_prompts(tok, [rendered[0]] * 3 + [rendered[1]] * 3)
    assert len(prompts[0]) != len(prompts[3])  # the shorter prompt is left-padded
    texts = ["<think> 2 + 3 = 5 </think> <answer> 5 </answer>", "5", "no idea at all, sorry", "4", "<answer>4</answer>",
             "four pens"]
    completions = [response_ids(tok, t, tok.eos_token_id) for t in texts]
    completions[1] = completions[1][:-1]  # one that ran out of tokens
    batch = build_batch(prompts, completions, tok.pad_token_id)
    model.train()
    plain, plain_ent = completion_logprobs(model, batch, with_entropy=True, temperature=0.7)
    grouped, grouped_ent = grouped_logprobs(model, batch, 3, with_entropy=True, temperature=0.7)
    torch.testing.assert_close(grouped, plain, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(grouped_ent, plain_ent, atol=1e-4, rtol=1e-5)
    assert float(plain.abs().sum()) > 1.0 and float(grouped[1, len(completions[1]):].abs().sum()) == 0.0
    weights = torch.linspace(-1.0, 1.0, plain.numel()).view_as(plain)
    (plain * weights).sum().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    (grouped * weights).sum().backward()
    assert expected and all("lora" in n for n in expected)  # only the adapters train
    for name, p in model.named_parameters():
        if name in expected:
            scale = float(expected[name].abs().max())
            assert float((p.grad - expected[name]).abs().max()) <= 1e-4 * scale + 1e-7, name
    with pytest.raises(ValueError, match="share one prompt"):
        grouped_logprobs(model, batch, 2)
    with pytest.raises(ValueError, match="groups of 4"):
        grouped_logprobs(model, batch, 4)
