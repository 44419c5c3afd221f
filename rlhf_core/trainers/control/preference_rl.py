"""Online preference RL (Christiano et al., 2017): PPO learns from a reward model that is itself
learning from comparisons of the agent's own recent behaviour.

Each round:
1. PPO trains for ``steps_per_round`` steps on the current learned reward (a reward-ensemble
   wrapper replaces the environment's reward; the Monitor below still logs the TRUE return).
2. The current policy is rolled out; its episodes are cut into clips of ``clip_length`` steps.
3. Query selection: among ``candidate_multiplier`` x (labels this round) random clip pairs, take
   those on which the ensemble members disagree most — the variance over members of
   P(left > right) — or random pairs when ``selection = "random"``. Each query stores the member
   predictions, the "why this pair" shown to the labeller.
4. The pairs are labelled: by a simulated B-Pref teacher from the true rewards (those labels stay
   inside the run: only their count is logged, no clips are stored), or by a person — the pairs
   and their clips go into the project's labelling queue and the job waits for the answers
   (Label clips page), checking for Cancel while it waits; those labels are ordinary comparisons.
5. The reward ensemble is refitted on every label so far; the wrapper switches to it.
Label schedule: ``initial_labels`` before any RL (from random-policy clips, as in the paper's
25 % of early comparisons from a random policy), then ``labels_per_round`` decaying by
``label_decay`` per round.

Resuming: the state is the end of a round (its refit done). A cancelled run saves the last one; a resumed
run keeps its labels and label count, refits the same reward model and continues with the next round. A
person's answers to the cancelled round's queries are in the project: those given by the time it resumes
are added then, later ones with the labels of the round they arrive in.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from dataclasses import dataclass

import numpy as np
import torch

from rlhf_core import kinds
from rlhf_core.config import param
from rlhf_core.envs.make import close_env, make_env
from rlhf_core.envs.policies import RandomPolicy, SB3Policy
from rlhf_core.envs.rollout import rollout
from rlhf_core.envs.storage import load_arrays, save_trajectory
from rlhf_core.jobs import JobCancelled, JobContext
from rlhf_core.labelers.synthetic import TEACHERS, Teacher
from rlhf_core.rewards.datasets import stack_observations, whole_pairs
from rlhf_core.rewards.networks import RewardEnsemble
from rlhf_core.rewards.outcomes import outcome_target
from rlhf_core.rewards.training import FitSettings, fit_reward_ensemble, reward_stats
from rlhf_core.rewards.wrapper import LearnedRewardVecEnv
from rlhf_core.sources.learner import MODEL_FILE, RolloutBoundary, load_ppo, make_ppo, ppo_kwargs


@dataclass
class PreferenceRLConfig:
    env_id: str = param("Pendulum-v1", "Gymnasium environment id.")
    labeller: str = param("synthetic", "Who answers the queries: a simulated teacher, or a person in the "
                          "Label clips page (the job waits for the labels).", choices=("synthetic", "human"))
    teacher: str = param("oracle", "Simulated B-Pref teacher (labeller = synthetic).", choices=TEACHERS)
    selection: str = param("disagreement", "Query selection: ensemble disagreement among candidates, or random.",
                           choices=("disagreement", "random"))
    rounds: int = param(10, "Rounds of (PPO, queries, reward refit).", min=1, max=10_000)
    steps_per_round: int = param(8_192, "PPO environment steps per round.", min=256)
    initial_labels: int = param(40, "Labels before any RL, from random-policy clips.", min=2)
    labels_per_round: int = param(30, "Labels in the first RL round.", min=1)
    label_decay: float = param(0.85, "Each round asks this fraction of the previous round's labels.",
                               min=0.1, max=1.0)
    candidate_multiplier: int = param(10, "Candidate pairs per query (Christiano: about 10x).", min=1, max=100)
    clip_length: int = param(25, "Clip length in steps.", min=2)
    episodes_per_round: int = param(4, "Policy episodes cut into clips each round.", min=1)
    members: int = param(3, "Reward ensemble size (each on its own bootstrap of the labels).", min=1, max=16)
    reward_steps: int = param(300, "Reward optimisation steps per member per refit.", min=10)
    ppo_batch_size: int = param(64, "PPO minibatch size.", min=8)
    seed: int = param(0, "Random seed.", min=0)
    save_steps: int = param(0, "Save a resumable state at the end of the first round after every N environment "
                            "steps (0: only when cancelled); a cancelled, failed or killed run resumes from the "
                            "last one.", min=0)


def _clips(trajs: list, length: int) -> list[tuple[int, int, int]]:
    """(trajectory index, start, end) of consecutive clips of ``length`` steps."""
    out = []
    for i, t in enumerate(trajs):
        for a in range(0, t.length - length + 1, length):
            out.append((i, a, a + length))
    return out


@torch.no_grad()
def _member_probs(ensemble: RewardEnsemble, obs_a: np.ndarray, obs_b: np.ndarray) -> np.ndarray:
    """P(a > b) under each member: [members]."""
    ra = ensemble(torch.from_numpy(obs_a)).sum(-1)
    rb = ensemble(torch.from_numpy(obs_b)).sum(-1)
    return torch.sigmoid(ra - rb).numpy()


def select_queries(ensemble: RewardEnsemble | None, trajs: list, clips: list, n: int, multiplier: int,
                   selection: str, rng: np.random.Generator) -> list[tuple[tuple, tuple, list[float]]]:
    """Pick ``n`` clip pairs: most ensemble disagreement among ``n * multiplier`` random candidates."""
    if len(clips) < 2:
        return []
    k = min(n * multiplier, len(clips) * (len(clips) - 1) // 2)
    cand = set()
    while len(cand) < k:
        i, j = rng.choice(len(clips), size=2, replace=False)
        cand.add((int(min(i, j)), int(max(i, j))))
    cand = list(cand)
    scored = []
    for i, j in cand:
        (ta, a0, a1), (tb, b0, b1) = clips[i], clips[j]
        if ensemble is not None:
            probs = _member_probs(ensemble, trajs[ta].observations[a0 + 1:a1 + 1], trajs[tb].observations[b0 + 1:b1 + 1])
            score = float(np.var(probs))
        else:
            probs, score = np.array([]), 0.0
        scored.append((score, clips[i], clips[j], probs.tolist()))
    if selection == "random" or ensemble is None:
        picks = [scored[p] for p in rng.permutation(len(scored))[:n]]
    else:
        picks = sorted(scored, key=lambda s: -s[0])[:n]
    return [(a, b, probs) for _, a, b, probs in picks]


def train_preference_rl(config: PreferenceRLConfig, ctx: JobContext) -> dict:
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    rng = np.random.default_rng(config.seed)
    project = ctx.project() if ctx.project_path is not None else None
    if config.labeller == "human" and project is None:
        raise ValueError("human labelling needs a project (the queries go to its Label clips page)")
    teacher = Teacher.preset(config.teacher)
    human = config.labeller == "human"

    # all labelled clips: their observations (T+1 rows) and the pairs (i, j, P(i better))
    clip_obs: list[np.ndarray] = []
    pairs: list[tuple[int, int, float]] = []
    answered: list[int] = []  # queue entries whose answers are in ``pairs`` (human labeller)
    labels_total = 0
    t0 = time.perf_counter()
    env = make_env(config.env_id, render=human)
    tmp = tempfile.TemporaryDirectory(prefix="pref-rl-")  # policy files when there is no project

    def label_round(trajs, n_labels, ensemble, round_index, step):
        nonlocal labels_total
        clips = _clips(trajs, config.clip_length)
        queries = select_queries(ensemble, trajs, clips, n_labels, config.candidate_multiplier, config.selection, rng)
        if human:
            traj_items = {}
            waiting = []
            for (ta, a0, a1), (tb, b0, b1), probs in queries:
                ids = []
                for t, s0, s1 in ((ta, a0, a1), (tb, b0, b1)):
                    if t not in traj_items:
                        traj_items[t] = save_trajectory(project, trajs[t], run_id=ctx.run_id)
                    ids.append(project.add_item("clip", parent_id=traj_items[t], run_id=ctx.run_id, source="policy",
                                                env_id=config.env_id, start_step=s0, end_step=s1, length=s1 - s0,
                                                true_return=float(trajs[t].rewards[s0:s1].sum())))
                reason = {"selection": config.selection, "member_p_left": probs,
                          "disagreement": float(np.var(probs)) if probs else None, "round": round_index}
                waiting.append((project.enqueue_pair(ids[0], ids[1], run_id=ctx.run_id, priority=10.0 + round_index,
                                                     reason=reason), (ta, a0, a1), (tb, b0, b1)))
            for queue_id, qa, qb in waiting:  # wait for the person's answers
                while True:
                    ctx.raise_if_cancelled()
                    row = project.conn.execute(
                        "SELECT c.outcome FROM pair_queue q JOIN comparisons c ON c.id = q.comparison_id "
                        "WHERE q.id = ? AND c.deleted_at IS NULL", [queue_id]).fetchone()
                    if row is not None:
                        break
                    done = sum(1 for q, _, _ in waiting if project.conn.execute(
                        "SELECT comparison_id FROM pair_queue WHERE id=?", [q]).fetchone()[0] is not None)
                    ctx.progress(round_index, config.rounds + 1,
                                 f"waiting for labels in Label clips: {done}/{len(waiting)} answered")
                    time.sleep(0.5)
                target = outcome_target(row[0])
                if target is not None:
                    _add_pair(trajs, qa, qb, target)
                answered.append(int(queue_id))
            labels_total += _late_answers(project, ctx.run_id, answered, clip_obs, pairs)
        else:
            for qa, qb, probs in queries:
                (ta, a0, a1), (tb, b0, b1) = qa, qb
                outcome = teacher.label(trajs[ta].rewards[a0:a1], trajs[tb].rewards[b0:b1], rng)
                target = outcome_target(outcome)
                if target is not None:
                    _add_pair(trajs, qa, qb, target)
        labels_total += len(queries)
        ctx.metrics(step, {"preferences/labels": labels_total})

    def _add_pair(trajs, qa, qb, target):
        for t, s0, s1 in (qa, qb):
            clip_obs.append(trajs[t].observations[s0:s1 + 1])
        pairs.append((len(clip_obs) - 2, len(clip_obs) - 1, float(target)))

    def refit(step, log=True):
        ensemble, stats = fit_reward_ensemble(
            whole_pairs(clip_obs, pairs),
            FitSettings(members=config.members, steps=config.reward_steps, seed=config.seed + len(pairs),
                        heldout_fraction=0.1 if len(pairs) >= 20 else 0.0), None)
        mean, std = reward_stats(ensemble, stack_observations(clip_obs)[0])
        if log and stats.get("heldout_accuracy") is not None:
            ctx.metrics(step, {"reward_model/heldout_accuracy": stats["heldout_accuracy"]})
        return ensemble, mean, std

    class StopWhenCancelled(BaseCallback):
        def _on_step(self) -> bool:
            return not ctx.cancelled

    state = ctx.resume_from
    try:
        if state is None:
            # ---- round 0: random-policy clips, before any RL
            random_trajs = [rollout(env, RandomPolicy(env.action_space, seed=config.seed + i), seed=config.seed + i,
                                    render=human) for i in range(config.episodes_per_round)]
            label_round(random_trajs, config.initial_labels, None, 0, 0)
            ensemble, mean, std = refit(0)
            curve, n_labels, first_round = [], float(config.labels_per_round), 1
        else:
            saved = state.extra
            clip_obs = [t.numpy() for t in state.tensors["clip_obs"]]
            pairs = [(int(a), int(b), float(t)) for a, b, t in saved["pairs"]]
            answered = [int(q) for q in saved["answered"]]
            labels_total = int(saved["labels"])
            if human:  # answers given after the state count too
                labels_total += _late_answers(project, ctx.run_id, answered, clip_obs, pairs)
            rng.bit_generator.state = saved["rng"]
            curve, n_labels, first_round = saved["curve"], float(saved["n_labels"]), int(saved["round"]) + 1
            ensemble, mean, std = refit(state.step, log=False)  # the same fit (same pairs and seed)

        n_envs, kwargs = ppo_kwargs(config.env_id, batch_size=config.ppo_batch_size)
        venv = make_vec_env(config.env_id, n_envs=n_envs, seed=config.seed)
        learned = LearnedRewardVecEnv(venv, ensemble, mean, std)
        vec = VecNormalize(learned, norm_obs=False, norm_reward=True, gamma=kwargs.get("gamma", 0.99))
        if state is None:
            model = make_ppo(vec, config.seed, kwargs)
        else:
            model = load_ppo(state.files[MODEL_FILE], vec)
            RolloutBoundary.restore(state.extra["boundary"], model=model, vec_normalize=vec, learned=learned)
            state.restore_random()
        folder = project.run_folder(ctx.run_id) if project is not None else Path(tmp.name)
        every = config.save_steps
        next_state = (model.num_timesteps // every + 1) * every if every else None
        boundary: dict = {}  # the end of the last round: what a cancelled run saves

        def round_end(r: int, step: int) -> None:
            nonlocal next_state
            data, counters = RolloutBoundary(model, vec, learned).snapshot()
            boundary.update(step=step, data=data, extra={
                "round": r, "boundary": counters, "pairs": [list(p) for p in pairs], "answered": list(answered),
                "labels": labels_total, "n_labels": n_labels, "curve": list(curve), "rng": rng.bit_generator.state},
                clips=len(clip_obs))
            if next_state is not None and step >= next_state:
                next_state = (step // every + 1) * every
                save_round_end()

        def save_round_end() -> None:
            if boundary:
                ctx.save_state(boundary["step"], {"clip_obs": [torch.from_numpy(np.ascontiguousarray(o))
                                                               for o in clip_obs[:boundary["clips"]]]},
                               boundary["extra"], {MODEL_FILE: boundary["data"]})

        if first_round <= config.rounds:
            round_end(first_round - 1, model.num_timesteps if state is None else state.step)
        try:
            for r in range(first_round, config.rounds + 1):
                ctx.raise_if_cancelled()
                model.learn(config.steps_per_round, reset_num_timesteps=False, callback=StopWhenCancelled())
                ctx.raise_if_cancelled()
                step = model.num_timesteps
                infos = list(model.ep_info_buffer)
                true_ret = float(np.mean([e["r"] for e in infos])) if infos else float("nan")
                values = {"rollout/true_return": true_ret}
                if learned.finished_learned_returns:
                    values["rollout/learned_return"] = float(np.mean(learned.finished_learned_returns[-20:]))
                for k in ("train/approx_kl", "train/clip_fraction"):
                    if k in model.logger.name_to_value:
                        values[k] = model.logger.name_to_value[k]
                ctx.metrics(step, values)
                curve.append({"round": r, "steps": step, "labels": labels_total, "true_return": true_ret})
                if r == config.rounds:
                    break
                policy_path = folder / "ppo_current.zip"
                model.save(str(policy_path))
                policy = SB3Policy(policy_path, deterministic=False)
                trajs = [rollout(env, policy, seed=config.seed + 1000 * r + i, render=human)
                         for i in range(config.episodes_per_round)]
                label_round(trajs, max(1, int(round(n_labels))), ensemble, r, step)
                n_labels *= config.label_decay
                ensemble, mean, std = refit(step)
                learned.ensemble, learned.mean, learned.std = ensemble.eval(), mean, std
                ctx.progress(r, config.rounds, f"round {r}/{config.rounds}: {labels_total} labels, "
                                               f"true return {true_ret:.1f}")
                round_end(r, step)
        except JobCancelled:
            save_round_end()
            raise
        vec.close()
        final_path = folder / "ppo_final.zip"
        model.save(str(final_path))
        if project is not None:
            project.add_checkpoint(ctx.run_id, kinds.SB3_PPO, final_path, step=model.num_timesteps,
                                   meta={"env_id": config.env_id, "labels": labels_total})
            rpath = folder / "reward_ensemble.pt"
            ensemble.save(rpath, {"reward_mean": mean, "reward_std": std, "env_id": config.env_id,
                                  "source": "preference_rl"})
            project.add_checkpoint(ctx.run_id, kinds.REWARD_ENSEMBLE, rpath, meta={"env_id": config.env_id,
                                                                              "source": "preference_rl"})
        eval_policy = SB3Policy(final_path)
        returns = [rollout(env, eval_policy, seed=config.seed + 90_000 + i, render=False).true_return for i in range(5)]
    finally:
        close_env(env)
        tmp.cleanup()
    return {"labels": labels_total, "final_true_return": float(np.mean(returns)),
            "final_true_return_std": float(np.std(returns)), "curve": curve,
            "wall_seconds": round(time.perf_counter() - t0, 2), "selection": config.selection}


def _late_answers(project, run_id: int, answered: list[int], clip_obs: list, pairs: list) -> int:
    """A person's answers to this run's queries that are not in ``answered`` (those of a cancelled round, given
    after its state was saved): added to the labels; returns how many queries they answered."""
    rows = project.conn.execute(
        "SELECT q.id, q.left_id, q.right_id, c.outcome FROM pair_queue q JOIN comparisons c ON c.id = q.comparison_id "
        "WHERE q.run_id = ? AND c.deleted_at IS NULL ORDER BY q.id", [run_id]).fetchall()
    known = set(answered)
    late = [r for r in rows if int(r[0]) not in known]
    for queue_id, left, right, outcome in late:
        target = outcome_target(outcome)
        if target is not None:
            for item_id in (left, right):
                clip_obs.append(load_arrays(project, project.get_item(item_id))["observations"])
            pairs.append((len(clip_obs) - 2, len(clip_obs) - 1, float(target)))
        answered.append(int(queue_id))
    return len(late)
