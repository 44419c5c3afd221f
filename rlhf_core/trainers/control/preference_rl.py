"""Online preference RL (Christiano et al., 2017): PPO learns from a reward model that is itself
learning from comparisons of the agent's own recent behaviour.

Each round:
1. PPO trains for ``steps_per_round`` steps on the current learned reward (a reward-ensemble
   wrapper replaces the environment's reward; the Monitor below still logs the TRUE return).
2. The current policy is rolled out; its episodes are cut into clips of ``clip_length`` steps.
3. Query selection: among ``candidate_multiplier`` x (labels this round) random clip pairs, take
   those on which the ensemble members disagree most (the variance over members of P(left > right)),
   those whose mean P(left) is nearest 0.5 (``selection = "uncertainty"``) or random pairs
   (``"random"``); see :mod:`rlhf_core.rewards.query_selection`. Each query stores the member
   predictions, the "why this pair" shown to the labeller.
4. The pairs are labelled: by a simulated B-Pref teacher from the true rewards, its skip and equal
   thresholds relative to the returns of the round's queries (those labels stay inside the run: only
   their count and outcomes are logged, no clips are stored), or by a person — the pairs
   and their clips go into the project's labelling queue (Label clips page); those labels are
   ordinary comparisons.
5. The reward ensemble is refitted on every label so far; the wrapper switches to it.
Label schedule: ``initial_labels`` before any RL (from random-policy clips, as in the paper's
25 % of early comparisons from a random policy), then ``labels_per_round`` decaying by
``label_decay`` per round. ``seed_labels`` adds the project's earlier clip labels of the env first.

A person labels asynchronously, as in the paper: a round waits at most ``max_wait_seconds`` for the
answers to its queries (0: not at all), then PPO goes on with the reward it has. Between PPO updates
the job looks at the queue (at most every ``POLL_SECONDS``) and refits as soon as ``refit_after`` new
labels have arrived; unanswered queries stay queued and count when answered. Only the first fit,
before any RL, waits for ``min_labels_to_start`` labels however long it takes. Cancel works in
every wait.

Resuming: the state is the end of a round (its refit done). A cancelled run saves the last one; a resumed
run keeps its labels and label count, refits the same reward model and continues with the next round. A
person's answers to the run's queries given after that state (during a later wait or PPO, or while the
run was stopped) are in the project: those given by the time it resumes are added then, later ones as
they arrive.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from dataclasses import dataclass

import numpy as np
import torch

from rlhf_core import kinds
from rlhf_core.config import apply_presets, param, to_dict
from rlhf_core.envs.make import close_env, make_env
from rlhf_core.envs.policies import RandomPolicy, SB3Policy
from rlhf_core.envs.rollout import rollout
from rlhf_core.envs.storage import clip_observations, save_trajectory
from rlhf_core.jobs import JobCancelled, JobContext
from rlhf_core.labelers.synthetic import EQUAL_FRACTION, SKIP_FRACTION, TEACHERS, Teacher
from rlhf_core.rewards.datasets import stack_observations, whole_pairs
from rlhf_core.rewards.networks import RewardEnsemble
from rlhf_core.rewards.outcomes import outcome_target, prefer_adjudications
from rlhf_core.rewards.query_selection import SELECTIONS, select_clip_pairs
from rlhf_core.rewards.query_selection import reason as query_reason
from rlhf_core.rewards.training import FitSettings, fit_reward_ensemble, reward_stats
from rlhf_core.rewards.wrapper import LearnedRewardVecEnv
from rlhf_core.sources.learner import FAST_MUJOCO_PPO, MODEL_FILE, RolloutBoundary, load_ppo, make_ppo, ppo_kwargs
from rlhf_core.store.model_card import control_policy_card, final_metrics

#: labeller = human: the job looks at its queue entries at most this often while PPO trains (seconds; one query)
POLL_SECONDS = 0.5


@dataclass
class PreferenceRLConfig:
    env_id: str = param("Pendulum-v1", "Gymnasium environment id.")
    labeller: str = param("synthetic", "Who answers the queries: a simulated teacher, or a person in the "
                          "Label clips page (PPO goes on while the person labels).", choices=("synthetic", "human"))
    teacher: str = param("oracle", "Simulated B-Pref teacher (labeller = synthetic).", choices=TEACHERS)
    beta: float = param(1.0, "noisy teacher: rationality beta in sigmoid(beta * dR).", min=0.0, min_inclusive=False,
                        advanced=True)
    epsilon: float = param(0.1, "mistake teacher: probability of flipping the answer.", min=0.0, max=1.0,
                           advanced=True)
    gamma: float = param(0.9, "myopic teacher: weight gamma^(H-1-t) on step t of a clip.", min=0.0, max=1.0,
                         advanced=True)
    skip_fraction: float = param(SKIP_FRACTION, "skip teacher: skip a query when both returns are below lowest + "
                                 "this fraction of the range of the round's query returns.", min=0.0, max=1.0,
                                 advanced=True)
    equal_fraction: float = param(EQUAL_FRACTION, "equal teacher: tie when the two returns differ by less than this "
                                  "fraction of the range of the round's query returns.", min=0.0, max=1.0,
                                  advanced=True)
    selection: str = param("disagreement", "Query selection among the candidates: ensemble disagreement (variance "
                           "of the members' P(left)), uncertainty (mean P(left) nearest 0.5) or random.",
                           choices=SELECTIONS)
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
    reward_layers: int = param(2, "Hidden layers of the reward network (0: a reward linear in the state).",
                               min=0, max=4)
    reward_hidden: int = param(64, "Units in each hidden layer of the reward network.", min=4)
    reward_l1: float = param(0.0, "L1 penalty on the reward network's input weights, each scaled by its state "
                             "feature's spread: a sparse reward that uses as few state features as the labels "
                             "need (0: off).", min=0.0, label="Reward L1")
    ppo_batch_size: int = param(64, "PPO minibatch size (left at 64, an environment's preset may choose another).",
                                min=8)
    use_presets: bool = param(True, "Give settings left at their defaults this environment's tuned values "
                              "(PRESETS; HalfCheetah-v5: a linear reward, fast PPO, longer clips and rounds). "
                              "Off: every setting is taken as it is.")
    seed: int = param(0, "Random seed.", min=0)
    save_steps: int = param(0, "Save a resumable state at the end of the first round after every N environment "
                            "steps (0: only when cancelled); a cancelled, failed or killed run resumes from the "
                            "last one.", min=0)
    seed_labels: bool = param(False, "Start from the project's earlier labels of env_id (live clip comparisons that "
                              "state a preference: left, right or tie): they join the labels before the first fit, "
                              "and round 0 asks only for what initial_labels lacks (nothing when they are enough).")
    refit_after: int = param(10, "labeller = human: refit the reward ensemble as soon as this many new labels have "
                             "arrived (looked for between PPO updates); at a round's end any new label is fitted.",
                             min=1)
    max_wait_seconds: float = param(120.0, "labeller = human: the longest a round waits for the answers to its "
                                    "queries before PPO goes on with the reward it has (later answers count when "
                                    "they arrive); 0: never wait, fully asynchronous.", min=0.0)
    min_labels_to_start: int = param(10, "labeller = human: labels the first fit, before any RL, waits for however "
                                     "long it takes (at most as many as round 0 asks for).", min=1)


#: Per-env settings: every field of :class:`PreferenceRLConfig` still at its declared default takes the
#: env's value (``use_presets=False``: none). ``ppo``: PPO keyword overrides on top of the tuned presets
#: of :mod:`rlhf_core.sources.learner`; an explicit ``ppo_batch_size`` replaces their ``batch_size``.
#: The result JSON lists what was applied under ``presets``.
PRESETS: dict[str, dict] = {
    # The extrapolation demo's PPO: rl-zoo's HalfCheetah PPO (1 env, lr 2e-5, 256-unit nets, 20 epochs) is far
    # too slow on a small CPU. A reward linear in the state extrapolates on HalfCheetah where MLP rewards score
    # running backwards high, sparse as in the demo (docs/experiments/extrapolation.md); 50-step clips show a gait.
    "HalfCheetah-v5": {"reward_layers": 0, "reward_l1": 1.0, "ppo": FAST_MUJOCO_PPO, "clip_length": 50,
                       "steps_per_round": 32_768, "rounds": 15},
}


def resolve_presets(config: PreferenceRLConfig) -> tuple[PreferenceRLConfig, dict, dict]:
    """(config with the env's preset applied, what was applied, PPO keyword overrides for ``ppo_kwargs``)."""
    preset = PRESETS.get(config.env_id, {}) if config.use_presets else {}
    config, applied, ppo = apply_presets(config, preset)
    return config, applied, ppo["ppo"]


def _clips(trajs: list, length: int) -> list[tuple[int, int, int]]:
    """(trajectory index, start, end) of consecutive clips of ``length`` steps."""
    out = []
    for i, t in enumerate(trajs):
        for a in range(0, t.length - length + 1, length):
            out.append((i, a, a + length))
    return out


def select_queries(ensemble: RewardEnsemble | None, trajs: list, clips: list, n: int, multiplier: int,
                   selection: str, rng: np.random.Generator) -> list[tuple[tuple, tuple, list[float]]]:
    """Pick ``n`` clip pairs among ``n * multiplier`` random candidates
    (:func:`rlhf_core.rewards.query_selection.select_clip_pairs`): ``(clip, clip, member predictions)``."""
    observations = [trajs[t].observations[a0:a1 + 1] for t, a0, a1 in clips]
    picked = select_clip_pairs(ensemble, observations, n, multiplier, selection, rng)
    return [(clips[i], clips[j], probs) for i, j, probs in picked]


def train_preference_rl(config: PreferenceRLConfig, ctx: JobContext) -> dict:
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    config, applied, ppo_over = resolve_presets(config)
    if applied:
        ctx.log(f"{config.env_id} presets: " + ", ".join(f"{k}={v}" for k, v in applied.items()))
    rng = np.random.default_rng(config.seed)
    project = ctx.project() if ctx.project_path is not None else None
    if config.labeller == "human" and project is None:
        raise ValueError("human labelling needs a project (the queries go to its Label clips page)")
    if config.seed_labels and project is None:
        raise ValueError("seed_labels needs a project (the earlier labels are in it)")
    teacher = Teacher.preset(config.teacher, beta=config.beta, gamma=config.gamma, epsilon=config.epsilon,
                             skip_fraction=config.skip_fraction, equal_fraction=config.equal_fraction)
    human = config.labeller == "human"

    # all labelled clips: their observations (T+1 rows) and the pairs (i, j, P(i better))
    clip_obs: list[np.ndarray] = []
    pairs: list[tuple[int, int, float]] = []
    answered: list[int] = []  # queue entries whose answers are in ``pairs`` (human labeller)
    labels_total = 0
    answers: dict[str, int] = {}  # the simulated teacher's outcomes (left, right, tie, skip)
    fitted = 0  # len(pairs) at the last fit
    refits = 0  # fits so far, the first one (before any RL) included
    waited = 0.0  # seconds PPO stood still waiting for a person's labels
    last_poll = -float("inf")
    t0 = time.perf_counter()
    env = make_env(config.env_id, render=human)
    tmp = tempfile.TemporaryDirectory(prefix="pref-rl-")  # policy files when there is no project

    def label_round(trajs, n_labels, ensemble, round_index, step) -> list[int]:
        """Ask ``n_labels`` queries: a person's go to the queue (their ids are returned), a simulated
        teacher's are answered at once."""
        nonlocal labels_total
        clips = _clips(trajs, config.clip_length)
        queries = select_queries(ensemble, trajs, clips, n_labels, config.candidate_multiplier, config.selection, rng)
        if human:
            traj_items, queued = {}, []
            for (ta, a0, a1), (tb, b0, b1), probs in queries:
                ids = []
                for t, s0, s1 in ((ta, a0, a1), (tb, b0, b1)):
                    if t not in traj_items:
                        traj_items[t] = save_trajectory(project, trajs[t], run_id=ctx.run_id)
                    ids.append(project.add_item("clip", parent_id=traj_items[t], run_id=ctx.run_id, source="policy",
                                                env_id=config.env_id, start_step=s0, end_step=s1, length=s1 - s0,
                                                true_return=float(trajs[t].rewards[s0:s1].sum())))
                reason = query_reason(config.selection, probs, round=round_index)
                queued.append(project.enqueue_pair(ids[0], ids[1], run_id=ctx.run_id, priority=10.0 + round_index,
                                                   reason=reason))
            return queued
        outcomes = teacher.label_batch([(trajs[ta].rewards[a0:a1], trajs[tb].rewards[b0:b1])
                                        for (ta, a0, a1), (tb, b0, b1), _ in queries], rng)
        for (qa, qb, _), outcome in zip(queries, outcomes):
            answers[outcome] = answers.get(outcome, 0) + 1
            target = outcome_target(outcome)
            if target is not None:
                for t, s0, s1 in (qa, qb):
                    clip_obs.append(trajs[t].observations[s0:s1 + 1])
                pairs.append((len(clip_obs) - 2, len(clip_obs) - 1, float(target)))
        labels_total += len(queries)
        ctx.metrics(step, {"preferences/labels": labels_total})
        return []

    def collect() -> set[int]:
        """Add the person's answers not added yet; the run's queue entries still waiting."""
        nonlocal labels_total, last_poll
        last_poll = time.monotonic()
        new, waiting = _collect_answers(project, ctx.run_id, answered, clip_obs, pairs)
        labels_total += new
        return waiting

    def wait_for_labels(queue_ids: list[int], round_index: int, need: int = 0) -> int:
        """Wait until every query of ``queue_ids`` is answered or ``max_wait_seconds`` have passed, and in any
        case until there are ``need`` labels (never more than the open queries can give); returns how
        many of the run's queries still wait."""
        nonlocal waited
        start = time.monotonic()
        deadline = start + config.max_wait_seconds
        asked = set(queue_ids)
        try:
            while True:
                ctx.raise_if_cancelled()
                waiting = collect()
                left = asked & waiting
                needed = min(need, len(pairs) + len(left)) - len(pairs)  # labels the first fit still needs
                now = time.monotonic()
                if needed <= 0 and (not left or now >= deadline):
                    return len(waiting)
                text = f"waiting for labels in Label clips: {len(asked) - len(left)}/{len(asked)} answered"
                if needed > 0:
                    text += f"; the first reward fit needs {needed} more"
                else:
                    text += f"; PPO goes on in {deadline - now:.0f} s"
                ctx.progress(round_index, config.rounds + 1, text)
                time.sleep(POLL_SECONDS if needed > 0 else min(POLL_SECONDS, max(deadline - now, 0.0)))
        finally:
            waited += time.monotonic() - start

    def refit(step, log=True):
        nonlocal fitted, refits
        ensemble, stats = fit_reward_ensemble(
            whole_pairs(clip_obs, pairs),
            FitSettings(members=config.members, hidden=config.reward_hidden, layers=config.reward_layers,
                        l1=config.reward_l1, steps=config.reward_steps, seed=config.seed + len(pairs),
                        heldout_fraction=0.1 if len(pairs) >= 20 else 0.0), None)
        mean, std = reward_stats(ensemble, stack_observations(clip_obs)[0])
        fitted = len(pairs)
        if log:
            refits += 1
            if stats.get("heldout_accuracy") is not None:
                ctx.metrics(step, {"reward_model/heldout_accuracy": stats["heldout_accuracy"]})
        return ensemble, mean, std

    def log_labels(step: int, waiting: int) -> None:
        ctx.metrics(step, {"preferences/labels": labels_total, "preferences/waiting": waiting,
                           "preferences/refits": refits})

    class BetweenUpdates(BaseCallback):
        """Stops PPO on Cancel; with a person labelling, refits between updates once enough labels came."""

        def _on_step(self) -> bool:
            return not ctx.cancelled

        def _on_rollout_end(self) -> None:
            if human and time.monotonic() - last_poll >= POLL_SECONDS:
                waiting = collect()
                if len(pairs) - fitted >= config.refit_after:
                    use(refit(self.model.num_timesteps))
                    log_labels(self.model.num_timesteps, len(waiting))

    state = ctx.resume_from
    try:
        if state is None:
            # ---- round 0: the project's earlier labels, random-policy clips, before any RL
            seeded = _seed_labels(project, config.env_id, clip_obs, pairs) if config.seed_labels else 0
            labels_total += seeded
            if config.seed_labels:
                ctx.log(f"seed_labels: {seeded} earlier labels of {config.env_id} from the project")
            n_ask = max(0, config.initial_labels - seeded)
            random_trajs = [rollout(env, RandomPolicy(env.action_space, seed=config.seed + i), seed=config.seed + i,
                                    render=human) for i in range(config.episodes_per_round if n_ask else 0)]
            if n_ask and not pairs and len(_clips(random_trajs, config.clip_length)) < 2:
                raise ValueError(f"The random policy's {config.episodes_per_round} episodes of {config.env_id} give "
                                 f"fewer than two clips of {config.clip_length} steps to compare: make clip_length "
                                 "shorter or episodes_per_round larger.")
            queue_ids = label_round(random_trajs, n_ask, None, 0, 0)
            if human:
                waiting = wait_for_labels(queue_ids, 0, need=config.min_labels_to_start)
                if not pairs:
                    raise ValueError("None of the first queries got a label that states a preference (left, right "
                                     "or tie): the reward model has nothing to learn from. Answer some of them "
                                     "with a preference, then start the run again.")
            ensemble, mean, std = refit(0)
            if human:
                log_labels(0, waiting)
            curve, n_labels, first_round = [], float(config.labels_per_round), 1
        else:
            saved = state.extra
            clip_obs = [t.numpy() for t in state.tensors["clip_obs"]]
            pairs = [(int(a), int(b), float(t)) for a, b, t in saved["pairs"]]
            answered = [int(q) for q in saved["answered"]]
            labels_total = int(saved["labels"])
            refits = int(saved.get("refits", 0))
            answers.update(saved.get("answers") or {})
            if human:  # answers given after the state count too
                labels_total += _collect_answers(project, ctx.run_id, answered, clip_obs, pairs)[0]
            rng.bit_generator.state = saved["rng"]
            curve, n_labels, first_round = saved["curve"], float(saved["n_labels"]), int(saved["round"]) + 1
            ensemble, mean, std = refit(state.step, log=False)  # the same fit (same pairs and seed)

        n_envs, kwargs = ppo_kwargs(config.env_id, **ppo_over)
        venv = make_vec_env(config.env_id, n_envs=n_envs, seed=config.seed)
        learned = LearnedRewardVecEnv(venv, ensemble, mean, std)
        vec = VecNormalize(learned, norm_obs=False, norm_reward=True, gamma=kwargs.get("gamma", 0.99))

        def use(fit) -> None:
            """PPO's reward from now on: the ensemble of ``fit`` (ensemble, mean, std)."""
            nonlocal ensemble, mean, std
            ensemble, mean, std = fit
            learned.ensemble, learned.mean, learned.std = ensemble.eval(), mean, std

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
                "labels": labels_total, "n_labels": n_labels, "curve": list(curve), "rng": rng.bit_generator.state,
                "refits": refits, "answers": dict(answers)}, clips=len(clip_obs))
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
                model.learn(config.steps_per_round, reset_num_timesteps=False, callback=BetweenUpdates())
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
                queue_ids = label_round(trajs, max(1, int(round(n_labels))), ensemble, r, step)
                n_labels *= config.label_decay
                if human:
                    waiting = wait_for_labels(queue_ids, r)
                    if len(pairs) > fitted:
                        use(refit(step))
                    log_labels(step, waiting)
                else:
                    use(refit(step))
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
            rpath = folder / "reward_ensemble.safetensors"
            ensemble.save(rpath, {"reward_mean": mean, "reward_std": std, "env_id": config.env_id,
                                  "source": "preference_rl"})
            project.add_checkpoint(ctx.run_id, kinds.REWARD_ENSEMBLE, rpath, meta={"env_id": config.env_id,
                                                                              "source": "preference_rl"})
        eval_policy = SB3Policy(final_path)
        returns = [rollout(env, eval_policy, seed=config.seed + 90_000 + i, render=False).true_return for i in range(5)]
    finally:
        close_env(env)
        tmp.cleanup()
    result = {"labels": labels_total, "final_true_return": float(np.mean(returns)),
              "final_true_return_std": float(np.std(returns)), "curve": curve,
              "wall_seconds": round(time.perf_counter() - t0, 2), "selection": config.selection, "presets": applied}
    if human:
        result.update(refits=refits, waited_seconds=round(waited, 2))
    else:
        result["teacher_outcomes"] = answers
    if project is not None:  # the model card of the run folder's policy and reward model
        control_policy_card(job="preference_rl", config=to_dict(config), env_id=config.env_id,
                            files=[rpath.name, final_path.name], run_id=ctx.run_id, project=project.name,
                            training_data={"labels": labels_total, "timesteps": int(model.num_timesteps),
                                           "rounds": config.rounds},
                            metrics=final_metrics(result, exclude=("labels", "refits", "waited_seconds"))
                            ).write(final_path.parent)
    return result


def _add_labels(project, rows, clip_obs: list, pairs: list) -> None:
    """Rows with ``left_id``, ``right_id`` (clips) and ``outcome``: those stating a preference join the labels."""
    rows = [r for r in rows if outcome_target(r["outcome"]) is not None]
    obs = clip_observations(project, [i for r in rows for i in (r["left_id"], r["right_id"])])
    for r in rows:
        for item_id in (r["left_id"], r["right_id"]):
            clip_obs.append(obs[item_id])
        pairs.append((len(clip_obs) - 2, len(clip_obs) - 1, float(outcome_target(r["outcome"]))))


def _collect_answers(project, run_id: int, answered: list[int], clip_obs: list, pairs: list) -> tuple[int, set[int]]:
    """A person's answers to this run's queries that are not in ``answered`` yet (given during a wait, while PPO
    trained, or after a cancelled run's state was saved): added to the labels and to ``answered``. Returns how
    many queries they answered and the ids of the run's queries still waiting (two live clips, no label)."""
    rows = project.run_queue(run_id)
    known = set(answered)
    late = [r for r in rows if r["outcome"] is not None and r["id"] not in known]
    _add_labels(project, late, clip_obs, pairs)
    answered.extend(int(r["id"]) for r in late)
    return len(late), {int(r["id"]) for r in rows if r["outcome"] is None and r["live"]}


def _seed_labels(project, env_id: str, clip_obs: list, pairs: list) -> int:
    """The project's earlier labels of two live clips of ``env_id`` that state a preference (an adjudicated
    pair: its adjudication): added to the labels; returns how many."""
    rows = [r for r in prefer_adjudications(project.comparisons_of("clip", env_id))
            if outcome_target(r["outcome"]) is not None]
    _add_labels(project, rows, clip_obs, pairs)
    return len(rows)
