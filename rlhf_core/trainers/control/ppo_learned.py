"""PPO (stable-baselines3) on a learned reward model, evaluated on the TRUE return.

Stack: make_vec_env (Monitor records true returns) -> LearnedRewardVecEnv (reward replaced) ->
VecNormalize(norm_obs=False, norm_reward=True). Hyperparameters are the tuned presets of
:mod:`rlhf_core.sources.learner`. Logged: ``rollout/true_return``, ``rollout/learned_return``,
``rollout/episode_length``, ``train/approx_kl``, ``train/entropy``, ``train/clip_fraction``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from rlhf_core import kinds
from rlhf_core.config import param, to_dict
from rlhf_core.envs.make import close_env, make_env
from rlhf_core.envs.policies import SB3Policy
from rlhf_core.envs.rollout import rollout
from rlhf_core.envs.storage import save_trajectory
from rlhf_core.jobs import JobContext
from rlhf_core.rewards.networks import RewardEnsemble
from rlhf_core.store import artefacts
from rlhf_core.store.model_card import control_policy_card, final_metrics
from rlhf_core.rewards.wrapper import LearnedRewardVecEnv
from rlhf_core.sources.learner import MODEL_FILE, RolloutBoundary, load_ppo, make_ppo, ppo_kwargs


@dataclass
class PPOLearnedConfig:
    env_id: str = param("Pendulum-v1", "Gymnasium environment id.")
    reward_checkpoint_id: int = param(0, "Reward-model checkpoint of this project to train on (0: the newest "
                                      "reward model of this environment).", min=0)
    total_steps: int = param(50_000, "PPO environment steps.", min=1_000, max=100_000_000)
    positive_reward: bool = param(False, "Squash the learned reward through a sigmoid (alive-bonus tasks).")
    eval_episodes: int = param(5, "Episodes to evaluate the final policy on the true return.", min=1)
    record_video: bool = param(True, "Store one rendered episode of the final policy.")
    seed: int = param(0, "Random seed.", min=0)
    init_policy: str = param("", "Start from this PPO policy (run:ID, checkpoint:ID, a name, or a .zip file; its "
                             "hyperparameters come with it); empty: a fresh policy.")
    save_steps: int = param(0, "Save a resumable state every N environment steps (0: only when cancelled); a "
                            "cancelled, failed or killed run resumes from the last one.", min=0)


def train_ppo_on_reward(env_id: str, ensemble: RewardEnsemble, mean: float, std: float, total_steps: int,
                        ctx: JobContext, *, seed: int = 0, positive: bool = False, step_offset: int = 0,
                        checkpoint_fracs: tuple[float, ...] = (), save_dir=None, batch_size: int | None = None,
                        ppo_overrides: dict | None = None, snapshots: list | None = None, init_path=None,
                        resume: tuple | None = None, save: Callable[[int, bytes, dict], None] | None = None,
                        save_steps: int = 0):
    """Train PPO on the learned reward; returns (model, list of (step, path) checkpoints saved).

    ``ppo_overrides`` replace preset PPO settings (``n_envs`` included). ``snapshots``, if given,
    receives ``(step, FastActor)`` at each checkpoint fraction (in memory, with or without
    ``save_dir``). ``init_path``: an SB3 PPO zip to continue training (warm start) instead of a fresh policy.

    Resuming: ``save(step, model bytes, counters)`` is called with the model as of its last update
    (:class:`rlhf_core.sources.learner.RolloutBoundary`) when cancelled and every ``save_steps``
    environment steps; ``resume`` = (those bytes or a path, the counters) continues such a run."""
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    n_envs, kwargs = ppo_kwargs(env_id, **{"batch_size": batch_size, **(ppo_overrides or {})})
    venv = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    learned = LearnedRewardVecEnv(venv, ensemble, mean, std, positive=positive)
    env = VecNormalize(learned, norm_obs=False, norm_reward=True, gamma=kwargs.get("gamma", 0.99))
    if resume is not None:
        model = load_ppo(resume[0], env)
        RolloutBoundary.restore(resume[1], model=model, vec_normalize=env, learned=learned)
    elif init_path is not None:
        from stable_baselines3 import PPO
        from stable_baselines3.common.logger import Logger

        model = PPO.load(str(init_path), env=env, device="cpu")
        model.set_random_seed(seed)
        model.set_logger(Logger(folder=None, output_formats=[]))
    else:
        model = make_ppo(env, seed, kwargs)
    start = model.num_timesteps if resume is not None else 0
    marks = [m for m in sorted(int(f * total_steps) for f in checkpoint_fracs) if m > start]
    saved: list[tuple[int, str]] = []
    boundary = RolloutBoundary(model, env, learned)
    every = save_steps if save is not None else 0
    next_state = [(start // every + 1) * every if every else None]
    stopped: list[bool] = []

    def save_boundary() -> None:
        if save is not None and boundary.step > 0:
            save(step_offset + boundary.step, *boundary.snapshot())

    class Callback(BaseCallback):
        def _on_rollout_start(self) -> None:
            boundary.mark()
            if next_state[0] is not None and self.num_timesteps >= next_state[0]:
                next_state[0] = (self.num_timesteps // every + 1) * every
                save_boundary()

        def _on_step(self) -> bool:
            if ctx.cancelled:
                stopped.append(True)
                return False
            if marks and (save_dir is not None or snapshots is not None) and self.num_timesteps >= marks[0]:
                marks.pop(0)
                if save_dir is not None:
                    path = save_dir / f"ppo_learned_{self.num_timesteps:08d}.zip"
                    self.model.save(str(path))
                    saved.append((self.num_timesteps, str(path)))
                if snapshots is not None:
                    snapshots.append((self.num_timesteps, FastActor(self.model)))
            if self.n_calls % 64 == 0:
                ctx.progress(self.num_timesteps, total_steps, f"PPO on learned reward: {self.num_timesteps:,}")
            return True

        def _on_rollout_end(self) -> None:
            values = {k: v for k, v in self.model.logger.name_to_value.items()
                      if k in ("train/approx_kl", "train/clip_fraction", "train/value_loss")}
            if "train/entropy_loss" in self.model.logger.name_to_value:
                values["train/entropy"] = -self.model.logger.name_to_value["train/entropy_loss"]
            infos = list(self.model.ep_info_buffer)
            if infos:
                values["rollout/true_return"] = float(np.mean([e["r"] for e in infos]))
                values["rollout/episode_length"] = float(np.mean([e["l"] for e in infos]))
            if learned.finished_learned_returns:
                values["rollout/learned_return"] = float(np.mean(learned.finished_learned_returns[-20:]))
            if values:
                ctx.metrics(step_offset + self.num_timesteps, values)

    if total_steps > start:
        model.learn(total_timesteps=total_steps - start, callback=Callback(), reset_num_timesteps=resume is None)
    env.close()
    if ctx.cancelled:
        if not stopped:  # stopped after its last update: that is the state
            boundary.mark()
        save_boundary()
    ctx.raise_if_cancelled()
    return model, saved


def _numpy_linear(layer) -> tuple[np.ndarray, np.ndarray]:
    return layer.weight.detach().numpy().T.astype(np.float64), layer.bias.detach().numpy().astype(np.float64)


class FastActor:
    """The deterministic action of an SB3 actor-critic policy, computed in numpy.

    ``model.predict`` costs ~0.5-1 ms per call on this CPU (tensor conversion, distribution objects,
    checks); a rollout of a 64-unit MLP needs a few microseconds of arithmetic. Supported: Box
    observations through SB3's flatten extractor, an MLP actor, Gaussian/gSDE actions without
    squashing (mean, clipped to the bounds, as ``predict(deterministic=True)``) or Discrete actions
    (arg-max). Anything else falls back to ``model.predict``. The weights are copied at creation, so
    an actor made during training is a snapshot of that moment.
    """

    def __init__(self, model):
        from gymnasium import spaces
        from stable_baselines3.common.distributions import (CategoricalDistribution, DiagGaussianDistribution,
                                                            StateDependentNoiseDistribution)
        from stable_baselines3.common.torch_layers import FlattenExtractor

        policy = model.policy
        self.model = model
        self.layers: list[tuple[np.ndarray, np.ndarray, str | None]] = []
        acts = {"Tanh": "tanh", "ReLU": "relu"}
        box = isinstance(policy.action_space, spaces.Box) and not policy.squash_output and isinstance(
            policy.action_dist, (DiagGaussianDistribution, StateDependentNoiseDistribution))
        discrete = isinstance(policy.action_space, spaces.Discrete) and isinstance(policy.action_dist,
                                                                                 CategoricalDistribution)
        extractor = policy.features_extractor if policy.share_features_extractor else policy.pi_features_extractor
        supported = ((box or discrete) and isinstance(policy.observation_space, spaces.Box)
                     and isinstance(extractor, FlattenExtractor))
        modules = list(policy.mlp_extractor.policy_net) if supported else []
        pending: list = []
        for m in modules:
            if isinstance(m, torch.nn.Linear):
                pending.append([*_numpy_linear(m), None])
            elif type(m).__name__ in acts and pending and pending[-1][2] is None:
                pending[-1][2] = acts[type(m).__name__]
            else:
                supported = False
        if getattr(policy.mlp_extractor, "shared_net", None) is not None and len(policy.mlp_extractor.shared_net):
            supported = False
        if supported:
            pending.append([*_numpy_linear(policy.action_net), None])
            self.layers = [tuple(x) for x in pending]
        self.supported = supported
        self.discrete = discrete
        space = policy.action_space
        self.low = getattr(space, "low", None)
        self.high = getattr(space, "high", None)
        self.shape = space.shape

    def act(self, obs):
        if not self.supported:
            return self.model.predict(obs, deterministic=True)[0]
        x = np.asarray(obs, dtype=np.float64).reshape(-1)
        for w, b, act in self.layers:
            x = x @ w + b
            if act == "tanh":
                x = np.tanh(x)
            elif act == "relu":
                x = np.maximum(x, 0.0)
        if self.discrete:
            return np.int64(np.argmax(x))
        return np.clip(x.astype(np.float32).reshape(self.shape), self.low, self.high)


def evaluate(env_id: str, policy, episodes: int, seed: int, *, render: bool = False):
    env = make_env(env_id, render=render)
    try:
        return [rollout(env, policy, seed=seed + i, render=render) for i in range(episodes)]
    finally:
        close_env(env)


def train_ppo_learned(config: PPOLearnedConfig, ctx: JobContext) -> dict:
    project = ctx.project()
    if config.reward_checkpoint_id:
        ckpt = next((c for c in project.checkpoints() if c["id"] == config.reward_checkpoint_id), None)
        if ckpt is None or ckpt["kind"] != kinds.REWARD_ENSEMBLE:
            raise ValueError(f"checkpoint {config.reward_checkpoint_id} is not a reward model of this project")
    else:
        ckpt = next((c for c in reversed(project.checkpoints()) if c["kind"] == kinds.REWARD_ENSEMBLE
                     and json.loads(c["meta_json"] or "{}").get("env_id") == config.env_id), None)
        if ckpt is None:
            raise ValueError(f"this project has no reward model of {config.env_id} yet: train one first "
                             "(job reward_model)")
    reward_id = int(ckpt["id"])
    state = ctx.resume_from
    if state is not None:  # the reward model it started on, even if a newer one was trained since
        reward_id = int(state.extra["reward_checkpoint_id"])
        ckpt = next((c for c in project.checkpoints() if c["id"] == reward_id), None)
        if ckpt is None:
            raise ValueError(f"the reward model this run trained on (checkpoint {reward_id}) is gone")
        project.discard_run_items(ctx.run_id, "trajectory")  # a killed run's video (made after training) goes
        state.restore_random()
    init_path = (artefacts.resolve_path(project, config.init_policy, (kinds.SB3_PPO,))
                 if config.init_policy.strip() and state is None else None)
    ensemble, extra = RewardEnsemble.load(project.abspath(ckpt["path"]))
    folder = project.run_folder(ctx.run_id)
    model, _ = train_ppo_on_reward(config.env_id, ensemble, extra.get("reward_mean", 0.0), extra.get("reward_std", 1.0),
                                   config.total_steps, ctx, seed=config.seed, positive=config.positive_reward,
                                   init_path=init_path, save_steps=config.save_steps,
                                   resume=(state.files[MODEL_FILE], state.extra["boundary"]) if state else None,
                                   save=lambda step, data, counters: ctx.save_state(
                                       step, {}, {"boundary": counters, "reward_checkpoint_id": reward_id},
                                       {MODEL_FILE: data}))
    path = folder / "ppo_final.zip"
    model.save(str(path))
    cid = project.add_checkpoint(ctx.run_id, kinds.SB3_PPO, path, step=config.total_steps,
                                 meta={"env_id": config.env_id, "reward_checkpoint_id": reward_id})
    policy = SB3Policy(path)
    trajs = evaluate(config.env_id, policy, config.eval_episodes, config.seed + 50_000)
    returns = [t.true_return for t in trajs]
    video_item = None
    if config.record_video:
        shown = evaluate(config.env_id, policy, 1, config.seed + 60_000, render=True)[0]
        shown.source = {"kind": "policy", "checkpoint_id": cid}
        video_item = save_trajectory(project, shown, run_id=ctx.run_id)
    result = {"checkpoint_id": cid, "reward_checkpoint_id": reward_id, "true_return_mean": float(np.mean(returns)),
              "true_return_std": float(np.std(returns)), "eval_returns": returns, "video_item": video_item}
    control_policy_card(job="ppo_learned", config=to_dict(config), env_id=config.env_id, files=[path.name],
                        run_id=ctx.run_id, project=project.name,
                        training_data={"timesteps": config.total_steps, "reward_checkpoint_id": reward_id},
                        metrics=final_metrics(result)).write(folder)
    return result
