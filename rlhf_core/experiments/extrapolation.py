"""The reward-extrapolation demo: ranked mediocre demonstrations -> learned reward -> a policy
better than any demonstration (T-REX, Brown et al. 2019; D-REX variant, Brown et al. 2019).

Stages, each reporting live:
1. Demonstrations from a PPO learner on the true reward (learning from a learner). ``trex``: a few
   episodes of each early checkpoint. With ``ranking="true_return"`` only those whose true return is
   at most ``max_demo_return`` (and at least ``min_demo_return``) are kept and ranked by it (as a
   person who sees the return would);
   with ``ranking="checkpoint"`` every checkpoint up to ``learner_steps`` is kept and ranked by the
   learner steps its policy was trained on (later = better; only policies ``checkpoint_gap`` apart
   are paired), and no true return is read on the way to the reward.
   ``drex``: ONE suboptimal demonstrator (the first checkpoint whose mean return reaches
   ``drex_demonstrator_return``), ``drex_demo_episodes`` episodes of it, behavioural cloning on
   those, then BC rollouts at the D-REX noise levels, ranked by noise (less noise = better).
2. Reward model: an ensemble fitted with the Bradley-Terry loss on snippet pairs.
3. PPO on the learned reward (true reward never seen).
4. Evaluation on the TRUE return, and the extrapolation check: predicted vs true return on
   trajectories the reward model never saw (policy checkpoints, other learner trajectories,
   random play), with Pearson and Spearman correlation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from rlhf_core import kinds
from rlhf_core.analysis.extrapolation import extrapolation_report, spearman
from rlhf_core.config import apply_presets, param
from rlhf_core.envs.make import close_env, env_info, make_env
from rlhf_core.envs.policies import BCNet, BCPolicy, BCSpec, EpsilonGreedy, RandomPolicy
from rlhf_core.envs.rollout import rollout
from rlhf_core.envs.storage import save_trajectory
from rlhf_core.jobs import JobCancelled, JobContext
from rlhf_core.rewards.datasets import drex_pairs, stack_observations, trex_pairs
from rlhf_core.rewards.training import FitSettings, fit_reward_ensemble, predicted_returns, reward_stats
from rlhf_core.sources.learner import FAST_MUJOCO_PPO, make_ppo, ppo_kwargs
from rlhf_core.trainers.control.ppo_learned import FastActor, evaluate, train_ppo_on_reward
from rlhf_core.sources.rollouts import DREX_CONTINUOUS, DREX_DISCRETE


#: ``min_demo_return``'s default: keeps every demonstration
MIN_DEMO_OFF = -1e9


@dataclass
class ExtrapolationDemoConfig:
    env_id: str = param("Pendulum-v1", "Gymnasium environment id.")
    method: str = param("trex", "trex: learner demos, ranked (see ranking); drex: one demonstrator, BC + "
                        "noise ranks.", choices=("trex", "drex"))
    ranking: str = param("true_return", "trex: how the demos are ranked. true_return: by their true return (demos "
                         "above max_demo_return dropped); checkpoint: by the learner steps their policy was trained on "
                         "(later = better; one checkpoint per policy), every checkpoint up to learner_steps, no "
                         "true return read.",
                         choices=("true_return", "checkpoint"))
    checkpoint_gap: float = param(0.5, "ranking checkpoint: pair only demos whose policies' learner steps differ "
                                  "by at least this fraction of learner_steps (0: any two policies). A "
                                  "learner's first updates are often no better than its untrained policy; "
                                  "a wide gap pairs only clearly earlier with clearly later policies.",
                                  min=0.0, max=1.0)
    learner_steps: int = param(20_000, "PPO steps on the true reward that produce the demonstrations.", min=1_000)
    checkpoint_every: int = param(2_000, "Learner checkpoint interval (steps).", min=100)
    episodes_per_checkpoint: int = param(3, "Demonstrations rolled out from each learner checkpoint.", min=1)
    max_demo_return: float = param(-700.0, "Keep only demonstrations whose true return is at most this "
                                   "(so every demonstration is mediocre).")
    min_demo_return: float = param(MIN_DEMO_OFF, "ranking true_return: keep only demonstrations whose true return "
                                   "is at least this, e.g. to drop a learner's standing-still start (default "
                                   "-1e9: off; a person ranking by return sees it too).",
                                   default_text="off (keep every demonstration)")
    snippet_pairs: int = param(3_000, "T-REX snippet pairs.", min=10)
    snippet_min: int = param(20, "Shortest snippet (steps).", min=1)
    snippet_max: int = param(50, "Longest snippet (steps).", min=1)
    members: int = param(3, "Reward ensemble size.", min=1, max=16)
    reward_steps: int = param(500, "Optimisation steps per ensemble member.", min=10)
    reward_hidden: int = param(64, "Hidden units of the reward MLP.", min=4)
    reward_layers: int = param(2, "Hidden layers of the reward MLP (0: a reward linear in the state).", min=0, max=4)
    reward_l1: float = param(0.0, "L1 penalty on the reward's input weights, each scaled by its state feature's "
                             "spread: a sparse reward that uses as few state features as the ranking needs "
                             "(0: off).", min=0.0, label="Reward L1")
    ppo_steps: int = param(40_000, "PPO steps on the learned reward.", min=1_000)
    ppo_batch_size: int = param(64, "PPO minibatch size for both PPO runs (left at 64, an env preset of this "
                                "demo may choose another: Pendulum's PPO on the learned reward uses 128 "
                                "with 16 envs and a higher learning rate).", min=8)
    use_presets: bool = param(True, "Give settings left at their defaults this environment's tuned values "
                              "(DEMO_PRESETS). Off: every setting is taken as it is, e.g. to run Pendulum with "
                              "a PPO minibatch of exactly 64.")
    stop_learner_when_good: bool = param(True, "Stop the learner at the first checkpoint whose demonstrations "
                                         "all beat max_demo_return (later ones would be discarded anyway).")
    eval_episodes: int = param(10, "Episodes to evaluate the final policy on the true return.", min=1)
    drex_demonstrator_return: float = param(-900.0, "D-REX: the demonstrator is the first learner checkpoint whose "
                                            "mean return reaches this (the learner stops there; none does: "
                                            "its last checkpoint).")
    drex_judge_episodes: int = param(10, "D-REX: episodes that judge each learner checkpoint against "
                                     "drex_demonstrator_return, from the same start states every time (3 let "
                                     "a near-random Pendulum checkpoint pass by luck).", min=1)
    drex_demo_episodes: int = param(5, "D-REX: episodes of the demonstrator given as demonstrations.", min=1)
    bc_steps: int = param(2_000, "D-REX: behavioural-cloning optimisation steps (minibatch 256).", min=10)
    drex_rank_demos: bool = param(False, "D-REX: also pair the demonstrations themselves, ranked above every BC "
                                  "rollout (as if their noise were -0.3).")
    drex_rollouts_per_level: int = param(10, "D-REX: BC rollouts per noise level (the same start states at "
                                         "every level; 5 gave Pendulum rewards that did not extrapolate).", min=1)
    seed: int = param(0, "Random seed.", min=0)
    store_trajectories: bool = param(True, "Store the demonstrations in the project (no video).")
    video_of_policy: bool = param(True, "Store one rendered episode of the final policy.")


#: Per-env settings of this demo. Every field of :class:`ExtrapolationDemoConfig` that is still at its
#: declared default takes the env's value from here, so a setting the user gives always wins (giving
#: exactly the generic default cannot be told apart from giving nothing: ``use_presets=False`` turns the
#: presets off to run exactly the values given). ``ppo`` (PPO on the learned
#: reward) and ``learner_ppo`` (the learner that makes the demonstrations) are PPO settings applied on
#: top of the tuned presets of :mod:`rlhf_core.sources.learner`; an explicit ``ppo_batch_size``
#: replaces their ``batch_size``. The result JSON lists what was applied under ``presets``.
DEMO_PRESETS: dict[str, dict] = {
    # Both PPO runs collect 16 envs x 256 steps (the same 4,096 per update as rl-zoo's 4 x 1,024) so
    # each policy call serves 16 env steps. The learner keeps minibatch 64 / lr 1e-3 (its demos
    # decide the reward's quality; a larger minibatch gave demos too poor to learn a reward from). PPO
    # on the learned reward uses minibatch 128 with lr 1.5e-3 and 32k steps (half the gradient steps);
    # the reward MLP is 32 wide (a quarter of the 64-wide one's arithmetic, no loss of correlation).
    # Why each setting: docs/experiments/extrapolation.md.
    "Pendulum-v1": {
        "ppo": {"n_envs": 16, "n_steps": 256, "batch_size": 128, "learning_rate": 1.5e-3},
        "ppo_steps": 32_000,
        "learner_ppo": {"n_envs": 16, "n_steps": 256},
        "reward_hidden": 32,
        # D-REX: the learner runs until a checkpoint averages -900 (tuning seeds 10-12: at 14k-18k steps)
        "drex": {"learner_steps": 40_000},
        # ranked by checkpoint: one checkpoint per policy (5 in 20k steps), so more episodes of each
        "checkpoint_ranking": {"episodes_per_checkpoint": 10},
    },
    # Meant for a policy that beats the best demo in <= 15 min on 2 cores. PPO: common MuJoCo settings
    # (lr 3e-4, gamma 0.99, GAE 0.95, clip 0.2, 10 epochs) on 16 envs x 256 steps with 64-unit nets;
    # rl-zoo's HalfCheetah preset (lr 2e-5, 256-unit nets, 20 epochs, 1M steps) is far too slow for
    # the budget here. The reward is linear in the state (MLP rewards score running backwards above
    # every demo) and sparse (L1: else PPO exploits weights on joint speeds that happen to rank the
    # demos); demos up to 1,000 so that some of them run even when the learner jumps from standing
    # still to running between two checkpoints. Why each value: docs/experiments/extrapolation.md.
    "HalfCheetah-v5": {
        "learner_steps": 300_000, "checkpoint_every": 16_384, "episodes_per_checkpoint": 2,
        "max_demo_return": 1000.0, "snippet_min": 50, "snippet_max": 100, "reward_layers": 0, "reward_l1": 1.0,
        "reward_steps": 600, "ppo_steps": 1_500_000, "eval_episodes": 5,
        "ppo": FAST_MUJOCO_PPO, "learner_ppo": FAST_MUJOCO_PPO,
        # D-REX: a demonstrator that runs forwards but slowly (T-REX's learner reached ~380 by 164k steps)
        "drex": {"drex_demonstrator_return": 300.0, "learner_steps": 300_000, "ppo_steps": 700_000},
        # ranked by checkpoint: this learner improves almost steadily, so nearby policies are paired too
        "checkpoint_ranking": {"checkpoint_gap": 0.1},
    },
}


def resolve_presets(config: ExtrapolationDemoConfig) -> tuple[ExtrapolationDemoConfig, dict, dict, dict]:
    """(config with the env's presets applied, what was applied, PPO overrides, learner PPO overrides).

    A preset's ``drex`` (method drex) or ``checkpoint_ranking`` (trex ranked by checkpoint) entries
    override its general ones for that variant."""
    preset = DEMO_PRESETS.get(config.env_id, {}) if config.use_presets else {}
    variant = "drex" if config.method == "drex" else "checkpoint_ranking" if config.ranking == "checkpoint" else ""
    preset = {**preset, **preset.get(variant, {})}
    config, applied, ppo = apply_presets(config, preset, ppo_keys=("ppo", "learner_ppo"))
    return config, applied, ppo["ppo"], ppo["learner_ppo"]


@dataclass
class LearnerDemos:
    """What the learner left: every checkpoint's episodes and, for D-REX, the demonstrator's."""
    trajectories: list
    demonstrator: list
    demonstrator_step: int | None = None


def _learner_demos(config: ExtrapolationDemoConfig, ctx: JobContext, folder, keep_files: bool = True,
                   overrides: dict | None = None) -> LearnerDemos:
    """Train PPO on the true reward and roll out each checkpoint. The learner stops early only where
    the method reads true returns anyway: trex ranked by true return (``stop_learner_when_good``)
    and drex (at its demonstrator)."""
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    n_envs, kwargs = ppo_kwargs(config.env_id, **(overrides or {"batch_size": config.ppo_batch_size}))
    venv = make_vec_env(config.env_id, n_envs=n_envs, seed=config.seed)
    model = make_ppo(venv, config.seed, kwargs)
    env = make_env(config.env_id, render=False)
    trajs: list = []
    stopped_at: list[int] = []
    demonstrator: list = []
    drex = config.method == "drex"
    stop_when_good = config.stop_learner_when_good and not drex and config.ranking == "true_return"
    # ranked by checkpoint: a checkpoint only once the policy changed (PPO updates once per rollout:
    # two checkpoints of one policy would be ranked apart for nothing)
    by_checkpoint = not drex and config.ranking == "checkpoint"
    taken: list[int] = []  # policy_step of each checkpoint taken

    def demos_from(policy, step: int, episodes: int, seed0: int, kind: str = "checkpoint",
                   policy_step: int | None = None) -> list:
        # step: when it was rolled out; policy_step: the learner steps its policy was trained on (PPO
        # updates once per rollout, so checkpoints within one rollout share a policy)
        source = {"kind": kind, "step": step, "policy_step": step if policy_step is None else policy_step}
        out = []
        for e in range(episodes):
            ctx.raise_if_cancelled()
            t = rollout(env, policy, seed=seed0 + e, render=False, source=dict(source))
            out.append(t)
            if kind == "checkpoint":
                ctx.metrics(len(trajs) + len(out), {"demos/true_return": t.true_return})
        return out

    def take_demonstrator(policy, step: int, policy_step: int | None = None) -> None:
        demonstrator.extend(demos_from(policy, step, config.drex_demo_episodes, config.seed + 40_000,
                                       kind="demonstrator", policy_step=policy_step))
        stopped_at.append(step)

    class Save(BaseCallback):
        next_at = 0
        index = 0
        policy_step = 0

        def _on_rollout_start(self) -> None:
            self.policy_step = self.num_timesteps  # the policy was just updated on this many steps

        def _on_step(self) -> bool:
            if ctx.cancelled:
                return False
            if self.num_timesteps >= self.next_at and not (by_checkpoint and taken
                                                           and taken[-1] == self.policy_step):
                taken.append(self.policy_step)
                if keep_files:
                    self.model.save(str(folder / f"learner_{self.num_timesteps:08d}.zip"))
                # the learner's own (deterministic) behaviour at this checkpoint
                actor = FastActor(self.model)
                if drex:  # every checkpoint judged from the same start states
                    new = demos_from(actor, self.num_timesteps, config.drex_judge_episodes,
                                     config.seed + 30_000, policy_step=self.policy_step)
                else:
                    new = demos_from(actor, self.num_timesteps, config.episodes_per_checkpoint,
                                     config.seed + 1000 * self.index, policy_step=self.policy_step)
                trajs.extend(new)
                self.index += 1
                self.next_at = self.num_timesteps + config.checkpoint_every
                ctx.progress(min(self.num_timesteps / config.learner_steps, 1.0),
                             message=f"learner: {self.num_timesteps:,} steps, demos {len(trajs)}")
                if drex and np.mean([t.true_return for t in new]) >= config.drex_demonstrator_return:
                    take_demonstrator(actor, self.num_timesteps, self.policy_step)
                    return False
                # every later checkpoint would be too good to be a demonstration: stop learning
                if stop_when_good and new and min(t.true_return for t in new) > config.max_demo_return:
                    stopped_at.append(self.num_timesteps)
                    return False
            return True

    try:
        model.learn(total_timesteps=config.learner_steps, callback=Save())
        if ctx.cancelled:
            raise JobCancelled("cancelled")
        if drex and not demonstrator:
            ctx.log(f"no learner checkpoint reached a mean return of {config.drex_demonstrator_return:g}: "
                    f"the demonstrator is the learner at {model.num_timesteps:,} steps")
            take_demonstrator(FastActor(model), int(model.num_timesteps))
    finally:
        venv.close()
        close_env(env)
    if stopped_at and drex:
        ctx.log(f"D-REX demonstrator: the learner at {stopped_at[0]:,} steps")
    elif stopped_at:
        ctx.log(f"learner stopped at {stopped_at[0]:,} steps: its checkpoints are no longer mediocre "
                f"(every episode above {config.max_demo_return:g})")
    return LearnerDemos(trajs, demonstrator, stopped_at[0] if drex and stopped_at else None)


def select_demos(config: ExtrapolationDemoConfig, trajs: list) -> tuple[list, list]:
    """(demos, unseen): ranked by true return, the learner trajectories with a true return in
    [min_demo_return, max_demo_return] are the demos; the rest are never shown to the reward."""
    capped = [t for t in trajs if t.true_return <= config.max_demo_return]
    if len(capped) < 4:
        raise ValueError(f"only {len(capped)} learner trajectories have a true return <= {config.max_demo_return}; "
                         "lower learner_steps or raise max_demo_return")
    demos = [t for t in capped if t.true_return >= config.min_demo_return]
    if len(demos) < 2:
        raise ValueError(f"only {len(demos)} learner trajectories have a true return between "
                         f"{config.min_demo_return:g} and {config.max_demo_return:g}; lower min_demo_return, "
                         "raise max_demo_return or raise learner_steps")
    kept = {id(t) for t in demos}
    return demos, [t for t in trajs if id(t) not in kept]


def checkpoint_ranks(demos: list) -> list[float]:
    """Learning from a learner without ground truth: a demo's rank is the learner steps its policy was
    trained on (checkpoints of one PPO rollout share a policy: equal ranks, never paired)."""
    return [float(t.source.get("policy_step", t.source["step"])) for t in demos]


def ranked_pairs(config: ExtrapolationDemoConfig, demos: list):
    """T-REX snippet pairs of the learner's demos ranked as ``config.ranking`` says.

    With ``checkpoint`` only each demo's observations and source step are read (never its rewards)."""
    observations = [t.observations for t in demos]
    if config.ranking != "checkpoint":
        return observations, trex_pairs(observations, [t.true_return for t in demos], config.snippet_pairs,
                                        min_len=config.snippet_min, max_len=config.snippet_max, seed=config.seed)
    steps = checkpoint_ranks(demos)
    gap = config.checkpoint_gap * config.learner_steps
    if max(steps) - min(steps) < max(gap, 1e-9):
        raise ValueError(f"no two learner policies are checkpoint_gap ({config.checkpoint_gap:g} x "
                         f"{config.learner_steps:,} steps) apart: lower checkpoint_gap or raise learner_steps")
    return observations, trex_pairs(observations, steps, config.snippet_pairs, min_len=config.snippet_min,
                                    max_len=config.snippet_max, seed=config.seed, min_gap=gap)


def train_bc(config: ExtrapolationDemoConfig, demos: list, info, ctx: JobContext) -> BCPolicy:
    """Behavioural cloning on the demos' (observation, action) pairs (rewards are not read)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.concatenate([t.observations[:-1].reshape(len(t.actions), -1)
                                         for t in demos]).astype(np.float32))
    y = torch.from_numpy(np.concatenate([np.asarray(t.actions, np.float32).reshape(len(t.actions), -1)
                                         for t in demos]))
    spec = BCSpec(obs_dim=x.shape[1], discrete=info.discrete, n_out=info.n_actions if info.discrete else info.action_dim,
                  hidden=64, action_low=info.action_low, action_high=info.action_high)
    torch.manual_seed(config.seed)
    net = BCNet(spec)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for step in range(config.bc_steps):
        idx = torch.randint(len(x), (256,))
        out = net(x[idx])
        loss = F.cross_entropy(out, y[idx].long().view(-1)) if spec.discrete else F.mse_loss(out, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0:
            ctx.raise_if_cancelled()
            ctx.metrics(step, {"bc/loss": float(loss.detach())})
    return BCPolicy(net)


def noise_rollouts(config: ExtrapolationDemoConfig, policy, env, ctx: JobContext) -> tuple[list, list[float]]:
    """Rollouts of ``policy`` at each D-REX noise level; rollout k starts from the same state at every
    level (common start states: the curve then shows the noise, not the luck of the start)."""
    levels = DREX_DISCRETE if env_info(env).discrete else DREX_CONTINUOUS
    trajs, eps = [], []
    for li, e in enumerate(levels):
        for k in range(config.drex_rollouts_per_level):
            ctx.raise_if_cancelled()
            start = config.seed + 20_000 + k
            pol = EpsilonGreedy(policy, env.action_space, e, seed=start + 100 * li) if e > 0 else policy
            t = rollout(env, pol, seed=start, render=False, source={"kind": "bc", "epsilon": e})
            trajs.append(t)
            eps.append(float(e))
            ctx.metrics(li, {"drex/true_return": t.true_return, "drex/epsilon": e})
        ctx.progress(li + 1, len(levels), f"D-REX noise level {e:.2f}")
    return trajs, eps


def noise_curve(trajs: list, eps: list[float]) -> tuple[list[dict], float]:
    """The noise-degradation curve (true return by ε; a measurement, never used for the reward) and
    the Spearman correlation of ε with its mean return (D-REX needs it near -1)."""
    curve = []
    for e in sorted(set(eps)):
        r = np.asarray([t.true_return for t, e2 in zip(trajs, eps) if e2 == e])
        curve.append({"epsilon": float(e), "mean_return": float(r.mean()), "std_return": float(r.std()), "n": len(r)})
    rho = spearman([c["epsilon"] for c in curve], [c["mean_return"] for c in curve])
    return curve, rho


def run_extrapolation_demo(config: ExtrapolationDemoConfig, ctx: JobContext) -> dict:
    """Run the demo; without a project its files go to a temporary folder removed at the end."""
    if ctx.project_path is not None:
        return _run(config, ctx, ctx.project().run_folder(ctx.run_id))
    import shutil
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="rlhf-demo-"))
    try:
        return _run(config, ctx, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(config: ExtrapolationDemoConfig, ctx: JobContext, folder) -> dict:
    t_start = time.perf_counter()
    times: dict[str, float] = {}
    project = ctx.project() if ctx.project_path is not None else None
    config, applied, ppo_over, learner_over = resolve_presets(config)
    if applied:
        ctx.log(f"{config.env_id} presets: " + ", ".join(f"{k}={v}" for k, v in applied.items()))

    # one bar over the four stages (each reports its own 0..1): the two PPO runs by their steps, the
    # reward model and the evaluation by their measured share (docs/experiments/extrapolation.md)
    spans = _stage_spans(config)

    # ------------------------------------------------------------------ 1. demonstrations
    with ctx.stage(*spans["demonstrations"]):
        learned = _learner_demos(config, ctx, folder, keep_files=project is not None, overrides=learner_over)
    learner_trajs = learned.trajectories
    if config.method == "drex":
        demos, unseen_learner = learned.demonstrator, learner_trajs
    elif config.ranking == "checkpoint":  # every checkpoint; no true return read to choose them
        demos, unseen_learner = learner_trajs, []
        if len(set(checkpoint_ranks(demos))) < 2:
            raise ValueError("ranking by checkpoint needs demonstrations from at least two learner policies: "
                             "raise learner_steps or lower checkpoint_every")
    else:
        demos, unseen_learner = select_demos(config, learner_trajs)
    times["demonstrations"] = time.perf_counter() - t_start
    if project is not None and config.store_trajectories:
        for t in demos:
            save_trajectory(project, t, run_id=ctx.run_id)

    # ------------------------------------------------------------------ 2. reward model
    t0 = time.perf_counter()
    bc = None
    curve: list[dict] = []
    curve_rho = float("nan")
    reward_lo, reward_hi = spans["reward_model"]
    fit_lo = reward_lo
    if config.method == "trex":
        train_obs, pairs = ranked_pairs(config, demos)
    else:
        fit_lo = (reward_lo + reward_hi) / 2  # BC and the noise rollouts: the first half of this stage
        with ctx.stage(reward_lo, fit_lo):
            env = make_env(config.env_id, render=False)
            try:
                bc = train_bc(config, demos, env_info(env), ctx)
                noisy, eps = noise_rollouts(config, bc, env, ctx)
            finally:
                close_env(env)
        curve, curve_rho = noise_curve(noisy, eps)
        ctx.sample(kinds.SAMPLE_NOISE_CURVE, {"epsilon": [c["epsilon"] for c in curve],
                                              "mean_true_return": [c["mean_return"] for c in curve],
                                              "std_true_return": [c["std_return"] for c in curve],
                                              "n": [c["n"] for c in curve]})
        train_obs = [t.observations for t in noisy]
        pair_eps = list(eps)
        if config.drex_rank_demos:  # above BC without noise by drex_pairs' gap
            train_obs = [t.observations for t in demos] + train_obs
            pair_eps = [-0.3] * len(demos) + pair_eps
        pairs = drex_pairs(train_obs, pair_eps, config.snippet_pairs, min_len=config.snippet_min,
                           max_len=config.snippet_max, seed=config.seed)
    with ctx.stage(fit_lo, reward_hi):
        ensemble, fit = fit_reward_ensemble(pairs, FitSettings(members=config.members, hidden=config.reward_hidden,
                                                               layers=config.reward_layers, l1=config.reward_l1,
                                                               steps=config.reward_steps,
                                                               seed=config.seed), ctx)
    mean, std = reward_stats(ensemble, stack_observations(train_obs)[0])
    times["reward_model"] = time.perf_counter() - t0
    if project is not None:
        path = folder / "reward_ensemble.safetensors"
        ensemble.save(path, {"reward_mean": mean, "reward_std": std, "env_id": config.env_id, "method": config.method})
        project.add_checkpoint(ctx.run_id, kinds.REWARD_ENSEMBLE, path, meta={"env_id": config.env_id, "method": config.method})

    # ------------------------------------------------------------------ 3. PPO on the learned reward
    t0 = time.perf_counter()
    snapshots: list = []  # (step, FastActor) of the PPO checkpoints: unseen trajectories of rising quality
    with ctx.stage(*spans["ppo"]):
        model, _ = train_ppo_on_reward(config.env_id, ensemble, mean, std, config.ppo_steps, ctx, seed=config.seed,
                                       step_offset=0, checkpoint_fracs=(0.1, 0.25, 0.5),
                                       save_dir=folder if project is not None else None, ppo_overrides=ppo_over,
                                       snapshots=snapshots)
    final = folder / "ppo_learned_final.zip"
    if project is not None:
        model.save(str(final))
    times["ppo"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ 4. evaluation & extrapolation
    t0 = time.perf_counter()
    ctx.progress(spans["evaluation"][0], message="evaluating the policy on the true return")
    policy_trajs = evaluate(config.env_id, FastActor(model), config.eval_episodes, config.seed + 50_000)
    policy_returns = np.asarray([t.true_return for t in policy_trajs])
    unseen = list(policy_trajs) + unseen_learner
    for i, (_, actor) in enumerate(snapshots):
        unseen += evaluate(config.env_id, actor, 2, config.seed + 60_000 + 10 * i)
    env = make_env(config.env_id, render=False)
    unseen += [rollout(env, RandomPolicy(env.action_space, seed=config.seed + 70_000 + i), seed=config.seed + 70_000 + i,
                       render=False) for i in range(3)]
    close_env(env)
    demo_returns = np.asarray([t.true_return for t in demos])  # evaluation: true returns may be read now
    pred_demo = predicted_returns(ensemble, [t.observations for t in demos])
    true_unseen = np.asarray([t.true_return for t in unseen])
    pred_unseen = predicted_returns(ensemble, [t.observations for t in unseen])
    report = extrapolation_report(demo_returns, pred_demo, true_unseen, pred_unseen)
    ctx.sample(kinds.SAMPLE_EXTRAPOLATION, {"true_demo": demo_returns.tolist(), "pred_demo": pred_demo.tolist(),
                                 "true_unseen": true_unseen.tolist(), "pred_unseen": pred_unseen.tolist(),
                                 "report": report})
    if project is not None and config.video_of_policy:
        shown = evaluate(config.env_id, FastActor(model), 1, config.seed + 80_000, render=True)[0]
        shown.source = {"kind": "policy", "method": config.method}
        save_trajectory(project, shown, run_id=ctx.run_id)
    bc_returns = ([t.true_return for t in evaluate(config.env_id, bc, config.eval_episodes, config.seed + 50_000)]
                  if bc is not None else [])  # the same start states as the policy's evaluation
    times["evaluation"] = time.perf_counter() - t0
    result = {
        "env_id": config.env_id, "method": config.method, "seed": config.seed,
        "n_demos": len(demos), "best_demo_return": float(demo_returns.max()),
        "mean_demo_return": float(demo_returns.mean()),
        "policy_return": float(policy_returns.mean()), "policy_return_std": float(policy_returns.std()),
        "reward_correlation": report["unseen_pearson"], "reward_spearman": report["unseen_spearman"],
        "demo_correlation": report["demo_pearson"], "heldout_pair_accuracy": fit.get("heldout_accuracy"),
        "heldout_pairs": fit.get("heldout_pairs"),
        "unseen_beyond_best_demo": report["unseen_beyond_best_demo"],
        "beats_best_demo": bool(policy_returns.mean() > demo_returns.max()),
        "stage_seconds": {k: round(v, 2) for k, v in times.items()},
        "presets": applied,
        "wall_seconds": round(time.perf_counter() - t_start, 2),
    }
    if config.method == "trex":
        result["ranking"] = config.ranking
    if bc is not None:
        result.update(bc_return=float(np.mean(bc_returns)), demonstrator_mean_return=float(demo_returns.mean()),
                      demonstrator_step=learned.demonstrator_step, noise_curve=curve, noise_curve_spearman=curve_rho,
                      beats_demonstrator=bool(policy_returns.mean() > demo_returns.mean()),
                      beats_bc=bool(policy_returns.mean() > float(np.mean(bc_returns))))
    ctx.metrics(0, {"demo/policy_return": result["policy_return"], "demo/best_demo_return": result["best_demo_return"]})
    ctx.progress(1.0, message="done")
    return result


#: shares of the whole bar for the reward model and the evaluation (Pendulum: 7.5 and 1.3 of ~46 s)
REWARD_SHARE, EVAL_SHARE = 0.16, 0.03


def _stage_spans(config: ExtrapolationDemoConfig) -> dict[str, tuple[float, float]]:
    """Each stage's part of the progress bar: the learner and PPO on the learned reward share what
    the reward model and the evaluation leave, in proportion to their environment steps."""
    rest = 1.0 - REWARD_SHARE - EVAL_SHARE
    demos = rest * config.learner_steps / (config.learner_steps + config.ppo_steps)
    edges = [0.0, demos, demos + REWARD_SHARE, 1.0 - EVAL_SHARE, 1.0]
    names = ("demonstrations", "reward_model", "ppo", "evaluation")
    return {name: (edges[i], edges[i + 1]) for i, name in enumerate(names)}
