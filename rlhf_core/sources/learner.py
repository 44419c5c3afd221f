"""Learning from a learner (T-REX): train SB3 PPO on the TRUE reward, save a checkpoint every N
steps, then roll out each checkpoint. Early checkpoints give ranked, mediocre demonstrations.

Hyperparameters are the tuned rl-baselines3-zoo settings where we have them (SB3's defaults do not
solve Pendulum in 200k steps); other environments fall back to SB3's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rlhf_core import kinds
from rlhf_core.config import param
from rlhf_core.envs.make import close_env, make_env
from rlhf_core.envs.policies import SB3Policy
from rlhf_core.envs.rollout import rollout
from rlhf_core.envs.storage import save_trajectory
from rlhf_core.jobs import JobCancelled, JobContext

#: rl-baselines3-zoo PPO settings (n_envs, then PPO keyword arguments)
PPO_PRESETS: dict[str, dict] = {
    "Pendulum-v1": {"n_envs": 4, "n_steps": 1024, "gae_lambda": 0.95, "gamma": 0.9, "n_epochs": 10,
                    "ent_coef": 0.0, "learning_rate": 1e-3, "clip_range": 0.2, "use_sde": True,
                    "sde_sample_freq": 4},
    "CartPole-v1": {"n_envs": 8, "n_steps": 32, "batch_size": 256, "gae_lambda": 0.8, "gamma": 0.98,
                    "n_epochs": 20, "ent_coef": 0.0, "learning_rate": 1e-3, "clip_range": 0.2},
    "LunarLander-v3": {"n_envs": 16, "n_steps": 1024, "batch_size": 64, "gae_lambda": 0.98, "gamma": 0.999,
                       "n_epochs": 4, "ent_coef": 0.01},
    "MountainCarContinuous-v0": {"n_envs": 1, "batch_size": 256, "n_steps": 8, "gamma": 0.9999,
                                 "learning_rate": 7.77e-05, "ent_coef": 0.00429, "clip_range": 0.1,
                                 "n_epochs": 10, "gae_lambda": 0.9, "max_grad_norm": 5, "vf_coef": 0.19,
                                 "use_sde": True, "policy_kwargs": {"log_std_init": -3.29, "ortho_init": False}},
    "HalfCheetah-v5": {"n_envs": 1, "batch_size": 64, "n_steps": 512, "gamma": 0.98, "learning_rate": 2.0633e-05,
                       "ent_coef": 0.000401762, "clip_range": 0.1, "n_epochs": 20, "gae_lambda": 0.92,
                       "max_grad_norm": 0.8, "vf_coef": 0.58096,
                       "policy_kwargs": {"log_std_init": -2, "ortho_init": False, "activation_fn": "relu",
                                         "net_arch": {"pi": [256, 256], "vf": [256, 256]}}},
}


@dataclass
class LearnerConfig:
    env_id: str = param("Pendulum-v1", "Gymnasium environment id.")
    total_steps: int = param(24_000, "PPO environment steps in total.", min=1_000, max=100_000_000)
    checkpoint_every: int = param(4_000, "Save a checkpoint every N environment steps.", min=100)
    episodes_per_checkpoint: int = param(1, "Trajectories rolled out from each checkpoint.", min=0, max=1000)
    max_steps: int = param(0, "Episode length limit for the rollouts (0: the env's own).", min=0)
    seed: int = param(0, "Seed for PPO and the rollouts.", min=0)
    record_video: bool = param(True, "Render the checkpoint rollouts (needed for clips and ranking).")


def ppo_kwargs(env_id: str, **overrides) -> tuple[int, dict]:
    """(n_envs, PPO keyword arguments) for an env: its tuned preset, then ``overrides``."""
    preset = dict(PPO_PRESETS.get(env_id, {"n_envs": 1}))
    preset.update({k: v for k, v in overrides.items() if v is not None})
    n_envs = preset.pop("n_envs", 1)
    pk = dict(preset.pop("policy_kwargs", {}) or {})
    if pk.get("activation_fn") == "relu":
        pk["activation_fn"] = torch.nn.ReLU
    # SB3's Adam (eps 1e-5, its PPO default) as one fused kernel: per-op overhead dominates these
    # small networks on a CPU (docs/performance.md), and the fused step is the same algorithm.
    pk.setdefault("optimizer_kwargs", {"eps": 1e-5, "fused": True})
    if pk:
        preset["policy_kwargs"] = pk
    return n_envs, preset


def make_ppo(env, seed: int, kwargs: dict):
    """SB3's PPO on the CPU with a logger that writes nothing: by default every ``learn()`` call makes an
    empty ``SB3-<date>`` folder in the temp directory. Its recorded values stay readable
    (``model.logger.name_to_value``), which the progress callbacks report."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger

    model = PPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **kwargs)
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def train_learner(config: LearnerConfig, ctx: JobContext) -> dict:
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    make_env(config.env_id, render=False).close()  # a clear message for a bad id, before anything else
    project = ctx.project() if ctx.project_path is not None else None
    folder = project.run_folder(ctx.run_id) if project is not None else None
    n_envs, kwargs = ppo_kwargs(config.env_id)
    venv = make_vec_env(config.env_id, n_envs=n_envs, seed=config.seed)
    model = make_ppo(venv, config.seed, kwargs)
    saved: list[tuple[int, int | None, str]] = []  # (step, checkpoint id, path)

    class Callback(BaseCallback):
        def __init__(self):
            super().__init__()
            self.next_save = config.checkpoint_every

        def _save(self, step: int) -> None:
            if folder is None:
                return
            path = folder / f"ppo_step_{step:08d}.zip"
            self.model.save(str(path))
            cid = project.add_checkpoint(ctx.run_id, kinds.SB3_PPO, path, step=step,
                                         meta={"env_id": config.env_id, "algo": "PPO"})
            saved.append((step, cid, str(path)))

        def _on_training_start(self) -> None:
            self._save(0)

        def _on_step(self) -> bool:
            if ctx.cancelled:
                return False
            step = self.num_timesteps
            if step >= self.next_save:
                self._save(step)
                self.next_save += config.checkpoint_every
            ctx.progress(step, config.total_steps, f"PPO step {step:,}/{config.total_steps:,}")
            return True

        def _on_rollout_end(self) -> None:
            infos = list(self.model.ep_info_buffer)
            values = {k: v for k, v in self.model.logger.name_to_value.items()
                      if k in ("train/approx_kl", "train/entropy_loss", "train/clip_fraction", "train/value_loss")}
            if "train/entropy_loss" in values:
                values["train/entropy"] = -values.pop("train/entropy_loss")
            if infos:
                values["rollout/true_return"] = float(np.mean([e["r"] for e in infos]))
                values["rollout/episode_length"] = float(np.mean([e["l"] for e in infos]))
            if values:
                ctx.metrics(self.num_timesteps, values)

    model.learn(total_timesteps=config.total_steps, callback=Callback())
    venv.close()
    ctx.raise_if_cancelled()
    if folder is not None and (not saved or saved[-1][0] < model.num_timesteps):
        path = folder / f"ppo_step_{model.num_timesteps:08d}.zip"
        model.save(str(path))
        saved.append((model.num_timesteps, project.add_checkpoint(
            ctx.run_id, kinds.SB3_PPO, path, step=model.num_timesteps, meta={"env_id": config.env_id, "algo": "PPO"}),
            str(path)))

    # ---- roll out every checkpoint (the ranked demonstrations) ----
    rollouts = []
    if project is not None and config.episodes_per_checkpoint:
        env = make_env(config.env_id, render=config.record_video)
        try:
            for i, (step, cid, path) in enumerate(saved):
                policy = SB3Policy(path)
                for ep in range(config.episodes_per_checkpoint):
                    if ctx.cancelled:
                        raise JobCancelled("cancelled")
                    traj = rollout(env, policy, seed=config.seed + 1000 + i * 100 + ep,
                                   max_steps=config.max_steps or None, render=config.record_video,
                                   source={"kind": "checkpoint", "step": step, "checkpoint_id": cid})
                    item = save_trajectory(project, traj, run_id=ctx.run_id)
                    rollouts.append({"checkpoint_step": step, "item": item, "true_return": traj.true_return})
                    ctx.metrics(model.num_timesteps + i, {"demos/true_return": traj.true_return})
                ctx.progress(i + 1, len(saved), f"rolled out checkpoint {i + 1}/{len(saved)}")
        finally:
            close_env(env)
    return {"checkpoints": [{"step": s, "id": c} for s, c, _ in saved], "rollouts": rollouts,
            "final_true_return": rollouts[-1]["true_return"] if rollouts else None}
