"""The job: sample and gold-label the reference's responses, fit the proxy, read the best-of-n curve,
run PPO on the proxy with the gold measured on the same completions, then the held-out and paired
checks; returns the JSON summary (keys: docs/experiments/ppo-overoptimisation.md)."""

from __future__ import annotations

import random
import time

import torch

from rlhf_core.experiments.ppo_overoptimisation.config import PPODemoConfig
from rlhf_core.experiments.ppo_overoptimisation.evaluation import (
    best_of_n_curve,
    goodhart_gap,
    heldout_win_rates,
    overoptimisation_summary,
    paired_curve,
    paired_goodhart_eval,
)
from rlhf_core.experiments.ppo_overoptimisation.gold import gold_function
from rlhf_core.experiments.ppo_overoptimisation.proxy import label_pairs, train_proxy
from rlhf_core.jobs import JobContext
from rlhf_core.text.generation import SamplingSettings
from rlhf_core.text.pairs import split_pairs
from rlhf_core.text.prompts import load_builtin_set
from rlhf_core.text.rl_common import load_policy, render_chat_prompt, sample_for_training, set_threads
from rlhf_core.trainers.text.ppo import PPOTextConfig, PPOTextTrainer, PromptBaseline, RewardModelScorer, run_ppo


def _ppo_config(c: PPODemoConfig):
    return PPOTextConfig(model=c.model, reward_model="(proxy)", prompt_set=c.prompt_set, steps=c.steps,
                         batch_size=c.batch_size, minibatch_size=c.minibatch_size, ppo_epochs=c.ppo_epochs,
                         learning_rate=c.learning_rate, value_learning_rate=c.value_learning_rate,
                         value_backbone=c.value_backbone, beta=c.beta,
                         adaptive_kl=c.adaptive_kl, kl_target=c.kl_target, max_new_tokens=c.max_new_tokens,
                         temperature=c.temperature, lora_rank=c.lora_rank, seed=c.seed, threads=c.threads)


def run_ppo_demo(config: PPODemoConfig, ctx: JobContext) -> dict:
    set_threads(config.threads)
    started = time.monotonic()
    prompts = [r.text for r in load_builtin_set(config.prompt_set, config.category or None)]
    random.Random(config.seed).shuffle(prompts)
    eval_prompts = prompts[config.n_prompts:config.n_prompts + config.eval_prompts]
    prompts = prompts[:config.n_prompts]

    gold_of = gold_function(config)

    # 1-2. the untouched policy's samples, labelled by the gold reward
    ctx.progress(0.0, message="Loading the policy")
    setup = load_policy(config.model, lora_rank=config.lora_rank, need_reference=True, ctx=ctx)
    ctx.raise_if_cancelled()
    ctx.progress(0.02, message=f"Sampling {config.label_samples} responses for each of {len(prompts)} prompts")
    rendered = [render_chat_prompt(setup.tokenizer, p) for p in prompts for _ in range(config.label_samples)]
    settings = SamplingSettings(max_new_tokens=config.max_new_tokens, temperature=config.temperature, top_p=1.0,
                                top_k=0)
    samples = sample_for_training(setup.model, setup.tokenizer, rendered, settings,
                                  [config.seed * 7919 + 17 * i + 1 for i in range(len(rendered))],
                                  on_step=ctx.raise_if_cancelled, batch_size=16)
    for s in samples:  # sample i answers prompt i // label_samples
        s.prompt_index //= config.label_samples
    golds = [gold_of(prompts[s.prompt_index], s.text, len(s.completion_ids)) for s in samples]
    # the gold in the proxy's units: centred per prompt on the same reference samples, in their spread
    gold_base = PromptBaseline.fit([prompts[s.prompt_index] for s in samples], golds)

    def gold_fn(ps, responses, metas):
        raw = torch.tensor([gold_of(p, r, m["completion_tokens"]) for p, r, m in zip(ps, responses, metas)])
        return {"reward": raw, "centred": gold_base(ps, raw)}

    def gold_centred(ps, responses, tokens):  # the same centred gold, from completion lengths
        return gold_fn(ps, responses, [{"completion_tokens": n} for n in tokens])["centred"].tolist()

    pairs = label_pairs(prompts, samples, golds)
    train_pairs, held_pairs = split_pairs(pairs, 0.25, config.seed)
    label_seconds = time.monotonic() - started

    # 3. the proxy reward model
    ctx.progress(0.08, message=f"Training the proxy reward model on {len(train_pairs)} pairs")
    t0 = time.monotonic()
    proxy, proxy_tok, held_acc, train_acc = train_proxy(config, train_pairs, held_pairs, ctx,
                                                        config.proxy_model or config.model)
    ctx.metrics(0, {"reward_model/heldout_accuracy": held_acc})
    proxy_seconds = time.monotonic() - t0
    scorer = RewardModelScorer(model=proxy, tokenizer=proxy_tok, normalize=True)
    if config.reward_baseline == "prompt":
        scorer.calibrate_per_prompt([prompts[s.prompt_index] for s in samples], [s.text for s in samples])

    bon: dict = {}
    if config.bon_samples:  # 3b. best-of-n on fresh reference samples: over-optimisation without training
        t0 = time.monotonic()
        k = config.bon_samples
        ctx.progress(0.09, message=f"Best-of-n: {k} reference responses for each of {len(prompts)} prompts")
        rows = [p for p in prompts for _ in range(k)]
        fresh = sample_for_training(setup.model, setup.tokenizer,
                                    [render_chat_prompt(setup.tokenizer, p) for p in rows], settings,
                                    [config.seed * 7919 + 900_001 + 37 * i for i in range(len(rows))],
                                    on_step=ctx.raise_if_cancelled, batch_size=32)
        ctx.raise_if_cancelled()
        # both scores centred per prompt on these samples and divided by their pooled within-prompt spread:
        # n = 1 (the reference itself) is exactly 0 on both, and 1 is one reference spread
        raw_proxy = scorer.raw(rows, [f.text for f in fresh]).tolist()
        raw_gold = [gold_of(p, f.text, len(f.completion_ids)) for p, f in zip(rows, fresh)]
        proxy_scores = PromptBaseline.fit(rows, raw_proxy)(rows, raw_proxy).tolist()
        gold_scores = PromptBaseline.fit(rows, raw_gold)(rows, raw_gold).tolist()
        ns = sorted({min(2 ** i, k) for i in range(k.bit_length() + 1)})
        bon = best_of_n_curve([proxy_scores[i * k:(i + 1) * k] for i in range(len(prompts))],
                              [gold_scores[i * k:(i + 1) * k] for i in range(len(prompts))], ns)
        c = bon["curve"]
        for i, n in enumerate(c["n"]):
            ctx.metrics(n, {"bon/proxy": c["proxy"][i], "bon/gold": c["gold"][i], "bon/kl": c["kl"][i]})
        bon = {f"bon_{key}": value for key, value in bon.items()}
        bon.update(bon_samples=k, bon_seconds=round(time.monotonic() - t0, 2),
                   bon_mean_length=sum(len(f.completion_ids) for f in fresh) / len(fresh))
    if config.steps == 0:
        return {"steps": 0, "seed": config.seed, "reward_baseline": config.reward_baseline,
                "gold_scale": gold_base.scale, "proxy_scale": scorer.scale, "label_pairs": len(pairs),
                "proxy_train_pairs": len(train_pairs), "proxy_heldout_accuracy": _finite(held_acc),
                "proxy_train_accuracy": _finite(train_acc), "label_seconds": round(label_seconds, 2),
                "proxy_seconds": round(proxy_seconds, 2), "wall_seconds": round(time.monotonic() - started, 2),
                **bon}

    # 4. PPO on the proxy; the gold reward is measured on the same completions, never optimised
    ctx.progress(0.12, message="PPO on the proxy reward")
    t0 = time.monotonic()
    trainer = PPOTextTrainer(setup, prompts, lambda p, r, m: {"model": scorer(p, r)}, _ppo_config(config),
                             gold_fn=gold_fn)
    history: list[dict] = []  # every rollout's metrics, for the over-optimisation summary

    def record(step: int, values: dict) -> None:
        if "reward/model" in values:
            history.append({"step": step, **values})

    paired: dict = {}
    paired_cache: dict = {}
    paired_seconds: list[float] = []  # every paired evaluation's time, kept out of seconds_per_step
    paired_steps: list[int] = []
    paired_pairs: list[tuple] = []  # every check's per-pair gains, for the curve's peak-to-last drop

    def paired_check(step: int) -> dict | None:
        """The paired evaluation after the last step and, with ``paired_eval_every``, along the way."""
        every = config.paired_eval_every
        if not config.paired_eval_samples or not (step == config.steps or (every and step and step % every == 0)):
            return None
        t = time.monotonic()
        ctx.progress(0.12 + 0.88 * step / (config.steps + 1),
                     message=f"step {step}: paired evaluation, {config.paired_eval_samples} responses per prompt from "
                     "the policy and the reference")
        paired.clear()
        paired.update(paired_goodhart_eval(
            setup, lambda ps, texts: scorer(ps, texts).tolist(),
            gold_centred, prompts, config.paired_eval_samples, settings=settings, seed=config.seed,
            on_step=ctx.raise_if_cancelled, cache=paired_cache, pairs_out=paired_pairs))
        paired["paired_seconds"] = round(time.monotonic() - t, 2)
        paired_seconds.append(paired["paired_seconds"])
        paired_steps.append(step)
        return {f"eval/{k}": paired[k] for k in ("paired_proxy_gain", "paired_proxy_gain_se", "paired_gold_gain",
                                                  "paired_gold_gain_se", "paired_goodhart_gap",
                                                  "paired_goodhart_gap_se")}

    ctx._metric_sinks.append(record)
    try:
        result = run_ppo(trainer, ctx, progress_span=(0.12, 1.0), on_rollout=paired_check)
    finally:
        ctx._metric_sinks.remove(record)
    ppo_seconds = time.monotonic() - t0
    win: dict = {"eval_prompts": 0}
    if config.eval_prompts and not eval_prompts:
        win["win_rate_skipped"] = (f"no held-out prompts: the set has only {len(prompts)} prompts and all are "
                                   "used for training")
    elif eval_prompts:
        ctx.progress(1.0, message=f"Win rate against the reference on {len(eval_prompts)} held-out prompts")
        win = heldout_win_rates(setup, proxy, proxy_tok, eval_prompts, gold_of, max_new_tokens=config.max_new_tokens,
                                seed=config.seed, on_step=ctx.raise_if_cancelled)
        for key in ("eval_proxy_policy", "eval_proxy_reference"):  # in the units PPO saw (reward/model)
            win[key] = (win[key] - scorer.offset) / scorer.scale
        ctx.metrics(config.steps, {"eval/win_rate": win["win_rate_proxy"], "eval/win_rate_gold": win["win_rate_gold"],
                                   "eval/policy_score": win["eval_proxy_policy"],
                                   "eval/reference_score": win["eval_proxy_reference"]})
    win.update(paired)  # the last paired evaluation: the final policy's
    if paired_pairs:
        kl_at = {h["step"]: h["kl/seq_mean"] for h in history}
        win.update(paired_curve(paired_steps, [kl_at.get(s, float("nan")) for s in paired_steps], paired_pairs))
    summary = overoptimisation_summary([h["step"] for h in history], [h["reward/model"] for h in history],
                                       [h.get("gold/reward", float("nan")) for h in history],
                                       [h["kl/seq_mean"] for h in history], margin=config.overopt_margin)
    return {"reward_first": result["reward_first"], "reward_last": result["reward_last"],
            "gold_first": result.get("gold_first"), "gold_last": result.get("gold_last"),
            "kl_first": result["kl_first"], "kl_last": result["kl_last"],
            "sqrt_kl_last": max(result["kl_last"], 0.0) ** 0.5,
            "mean_length_first": result["length_first"], "mean_length_last": result["length_last"],
            "window": result["window"],
            **{f"{n}_window_{e}": result.get(f"{n}_window_{e}") for n in ("reward", "gold", "gold_centred", "kl",
                                                                           "length") for e in ("first", "last")},
            "gold_scale": gold_base.scale, "goodhart_gap": goodhart_gap(result),
            "beta": config.beta, "beta_last": result["beta_last"], "steps": config.steps, "seed": config.seed,
            "learning_rate": config.learning_rate, "reward_baseline": config.reward_baseline,
            "proxy_offset": scorer.offset, "proxy_scale": scorer.scale,
            "proxy_prompt_baselines": len(scorer.prompt_offsets),
            "label_pairs": len(pairs), "proxy_train_pairs": len(train_pairs),
            "proxy_heldout_accuracy": _finite(held_acc), "proxy_train_accuracy": _finite(train_acc),
            "label_gold_mean": sum(golds) / len(golds),
            "label_seconds": round(label_seconds, 2), "proxy_seconds": round(proxy_seconds, 2),
            "ppo_seconds": round(ppo_seconds, 2), "wall_seconds": round(time.monotonic() - started, 2),
            "peak_rss_mb": result["peak_rss_mb"],
            "paired_evaluations": len(paired_seconds), "paired_seconds_total": round(sum(paired_seconds), 2),
            "seconds_per_step": round((ppo_seconds - sum(paired_seconds)) / max(config.steps, 1), 2), **win,
            **bon, **summary}


def _finite(x: float) -> float | None:
    return None if x != x else float(x)
