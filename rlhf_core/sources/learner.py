"""Learning from a learner (T-REX): train SB3 PPO on the TRUE reward, save a checkpoint every N
steps, then roll out each checkpoint. Early checkpoints give ranked, mediocre demonstrations.

Hyperparameters are the tuned rl-baselines3-zoo settings where we have them (SB3's defaults do not
solve Pendulum in 200k steps); other environments fall back to SB3's defaults.
"""

from __future__ import annotations

import copy
import io
import os
from dataclasses import dataclass

import numpy as np
import torch

from rlhf_core import kinds
from rlhf_core.config import param, to_dict
from rlhf_core.envs.make import close_env, make_env
from rlhf_core.envs.policies import SB3Policy
from rlhf_core.envs.rollout import rollout
from rlhf_core.envs.storage import save_trajectory
from rlhf_core.jobs import JobCancelled, JobContext
from rlhf_core.store.model_card import control_policy_card, final_metrics

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

#: PPO overrides that train MuJoCo locomotion within minutes on a small CPU (common MuJoCo settings on
#: 16 envs x 256 steps with 64-unit nets; rl-zoo's HalfCheetah preset above, lr 2e-5 with 256-unit nets
#: and 20 epochs, is far too slow there). The HalfCheetah presets of the extrapolation demo and of
#: online preference RL use them.
FAST_MUJOCO_PPO: dict = {
    "n_envs": 16, "n_steps": 256, "batch_size": 256, "learning_rate": 3e-4, "n_epochs": 10, "gamma": 0.99,
    "gae_lambda": 0.95, "clip_range": 0.2, "ent_coef": 0.0, "max_grad_norm": 0.5, "vf_coef": 0.5,
    "policy_kwargs": {"log_std_init": -0.5, "net_arch": {"pi": [64, 64], "vf": [64, 64]}}}


@dataclass
class LearnerConfig:
    env_id: str = param("Pendulum-v1", "Gymnasium environment id.")
    total_steps: int = param(24_000, "PPO environment steps in total.", min=1_000, max=100_000_000)
    checkpoint_every: int = param(4_000, "Save a checkpoint every N environment steps.", min=100)
    episodes_per_checkpoint: int = param(1, "Trajectories rolled out from each checkpoint.", min=0, max=1000)
    max_steps: int = param(0, "Episode length limit for the rollouts (0: the env's own).", min=0)
    seed: int = param(0, "Seed for PPO and the rollouts.", min=0)
    record_video: bool = param(True, "Render the checkpoint rollouts (needed for clips and ranking).")
    save_steps: int = param(0, "Save a resumable state every N environment steps (0: only when cancelled); a "
                            "cancelled, failed or killed run resumes from the last one.", min=0)


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


def load_ppo(source, env):
    """An SB3 PPO saved by ``model.save`` (a path or bytes), on ``env``, with the silent logger of :func:`make_ppo`;
    it starts new episodes (SB3 drops the saved last observation)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger

    model = PPO.load(io.BytesIO(source) if isinstance(source, bytes) else str(source), env=env, device="cpu")
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


class RolloutBoundary:
    """An SB3 PPO as it stood at the start of its current rollout: its last update done, nothing collected
    since. A run cancelled mid-rollout saves this, so that a resumed run's rollouts (and the metric steps
    logged at their ends) fall where an uninterrupted run's do. During a rollout only the counters kept
    here change (not the weights), so :meth:`mark` copies no weights; the last update's logged values
    (read at the next rollout's end), ``VecNormalize``'s return statistics and the learned-reward
    wrapper's finished returns are kept with them."""

    def __init__(self, model, vec_normalize=None, learned=None):
        self.model, self.vec_normalize, self.learned = model, vec_normalize, learned
        self.mark()

    def mark(self) -> None:
        """Remember the model as it is now (call at the start of a rollout)."""
        m = self.model
        self.step = int(m.num_timesteps)
        self._buffers = (copy.copy(m.ep_info_buffer), copy.copy(m.ep_success_buffer))
        rms = self.vec_normalize.ret_rms if self.vec_normalize is not None else None
        self._ret_rms = None if rms is None else {"mean": np.asarray(rms.mean).tolist(),
                                                   "var": np.asarray(rms.var).tolist(), "count": float(rms.count)}
        self._learned = list(self.learned.finished_learned_returns[-20:]) if self.learned is not None else None
        self._logged = {k: float(v) for k, v in m.logger.name_to_value.items()
                        if isinstance(v, (int, float, np.number))}

    def snapshot(self) -> tuple[bytes, dict]:
        """The marked model as ``model.save`` bytes, and its wrappers' counters (JSON) for :meth:`restore`."""
        m = self.model
        now = (m.num_timesteps, m.ep_info_buffer, m.ep_success_buffer)
        m.num_timesteps, m.ep_info_buffer, m.ep_success_buffer = self.step, *self._buffers
        try:
            buffer = io.BytesIO()
            m.save(buffer)
        finally:
            m.num_timesteps, m.ep_info_buffer, m.ep_success_buffer = now
        return buffer.getvalue(), {"ret_rms": self._ret_rms, "learned_returns": self._learned, "logged": self._logged}

    @staticmethod
    def restore(saved: dict, model=None, vec_normalize=None, learned=None) -> None:
        """Put :meth:`snapshot`'s counters back into a resumed run's model (loaded from its bytes) and wrappers."""
        if model is not None:
            model.logger.name_to_value.update(saved.get("logged") or {})
        rms = saved.get("ret_rms")
        if vec_normalize is not None and rms is not None:
            target = vec_normalize.ret_rms
            target.mean, target.var = np.asarray(rms["mean"], np.float64), np.asarray(rms["var"], np.float64)
            target.count = float(rms["count"])
        if learned is not None and saved.get("learned_returns") is not None:
            learned.finished_learned_returns[:] = [float(v) for v in saved["learned_returns"]]


PPO_SHARE = 0.8  # of the progress bar; the checkpoints' roll-outs fill the rest


MODEL_FILE = "ppo.zip"  # the SB3 model inside a resumable state


def train_learner(config: LearnerConfig, ctx: JobContext) -> dict:
    make_env(config.env_id, render=False).close()  # a clear message for a bad id, before anything else
    project = ctx.project() if ctx.project_path is not None else None
    folder = project.run_folder(ctx.run_id) if project is not None else None
    state = ctx.resume_from
    resumed = state.extra if state is not None else {"phase": "ppo", "next_save": config.checkpoint_every}
    saved: list[tuple[int, int | None, str]] = []  # (step, checkpoint id, path)
    relog = False  # the demonstrations' rows are logged again (a killed run left more than its state lists)
    if state is not None:
        saved = _kept_checkpoints(project, ctx.run_id, resumed["checkpoints"])
        # demonstrations a killed run rolled out after its state go; several rows share a step, so those at
        # the state's step are not told apart: all go, and the ones the state lists are logged again below
        listed = resumed.get("rollouts", [])
        project.discard_run_items(ctx.run_id, "trajectory", [r["item"] for r in listed])
        if len(project.metrics(ctx.run_id).get("demos/true_return", ((), ()))[0]) != len(listed):
            project.discard_metric(ctx.run_id, "demos/true_return")
            relog = True

    def save_state(step: int, phase: dict, files: dict | None = None) -> None:
        ctx.save_state(step, {}, {**phase, "checkpoints": [cid for _, cid, _ in saved]}, files)

    if resumed["phase"] == "ppo":
        timesteps = _learn(config, ctx, project, folder, saved, state, save_state)
    else:
        timesteps = int(resumed["timesteps"])

    # ---- roll out every checkpoint (the ranked demonstrations) ----
    rollouts = list(resumed.get("rollouts", []))  # those done before a resume
    if relog:
        for r in rollouts:
            ctx.metrics(timesteps + r["checkpoint_index"], {"demos/true_return": r["true_return"]})
    if project is not None and config.episodes_per_checkpoint:
        env = make_env(config.env_id, render=config.record_video)
        try:
            n = 0
            for i, (step, cid, path) in enumerate(saved):
                policy = None
                for ep in range(config.episodes_per_checkpoint):
                    n += 1
                    if n <= len(rollouts):
                        continue
                    if ctx.cancelled:  # the demonstrations so far stay; their metrics are at or before this step
                        last = rollouts[-1]["checkpoint_index"] if rollouts else 0
                        save_state(timesteps + last, {"phase": "rollouts", "timesteps": timesteps,
                                                      "rollouts": rollouts})
                        raise JobCancelled("cancelled")
                    if policy is None:
                        policy = SB3Policy(path)
                    traj = rollout(env, policy, seed=config.seed + 1000 + i * 100 + ep,
                                   max_steps=config.max_steps or None, render=config.record_video,
                                   source={"kind": "checkpoint", "step": step, "checkpoint_id": cid})
                    item = save_trajectory(project, traj, run_id=ctx.run_id)
                    rollouts.append({"checkpoint_step": step, "checkpoint_index": i, "item": item,
                                     "true_return": traj.true_return})
                    ctx.metrics(timesteps + i, {"demos/true_return": traj.true_return})
                with ctx.stage(PPO_SHARE, 1.0):
                    ctx.progress(i + 1, len(saved), f"rolled out checkpoint {i + 1}/{len(saved)}")
        finally:
            close_env(env)
    for r in rollouts:
        r.pop("checkpoint_index", None)
    result = {"checkpoints": [{"step": s, "id": c} for s, c, _ in saved], "rollouts": rollouts,
              "final_true_return": rollouts[-1]["true_return"] if rollouts else None}
    if folder is not None and saved:  # one model card for the run folder's PPO checkpoints
        control_policy_card(job="learner", config=to_dict(config), env_id=config.env_id,
                            files=[os.path.basename(p) for _, _, p in saved], run_id=ctx.run_id,
                            project=project.name, training_data={"timesteps": timesteps, "checkpoints": len(saved),
                                                                 "rollouts": len(rollouts)},
                            metrics=final_metrics(result)).write(folder)
    return result


def _kept_checkpoints(project, run_id: int, ids: list[int]) -> list[tuple[int, int, str]]:
    """The checkpoints a resumed run keeps (those its state lists); rows it saved after that state go (a
    killed run's lost progress: the resumed run saves those steps again)."""
    rows = [c for c in project.checkpoints(run_id) if c["kind"] == kinds.SB3_PPO]
    project.delete_checkpoints(c["id"] for c in rows if c["id"] not in ids)
    by_id = {c["id"]: c for c in rows}
    return [(int(by_id[i]["step"]), i, str(project.abspath(by_id[i]["path"]))) for i in ids if i in by_id]


def _learn(config: LearnerConfig, ctx: JobContext, project, folder, saved: list, state, save_state) -> int:
    """The PPO phase (from a resumable state when given); returns its environment steps."""
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    n_envs, kwargs = ppo_kwargs(config.env_id)
    venv = make_vec_env(config.env_id, n_envs=n_envs, seed=config.seed)
    if state is not None:
        model = load_ppo(state.files[MODEL_FILE], venv)
        RolloutBoundary.restore(state.extra["boundary"], model=model)
        state.restore_random()
    else:
        model = make_ppo(venv, config.seed, kwargs)
    boundary = RolloutBoundary(model)

    class Callback(BaseCallback):
        def __init__(self):
            super().__init__()
            self.next_save = int(state.extra["next_save"]) if state is not None else config.checkpoint_every
            self.next_state = _next_multiple(model.num_timesteps, config.save_steps)
            self.stopped = False

        def _save(self, step: int) -> None:
            if folder is None:
                return
            path = folder / f"ppo_step_{step:08d}.zip"
            self.model.save(str(path))
            cid = project.add_checkpoint(ctx.run_id, kinds.SB3_PPO, path, step=step,
                                         meta={"env_id": config.env_id, "algo": "PPO"})
            saved.append((step, cid, str(path)))

        def _on_training_start(self) -> None:
            if state is None:
                self._save(0)

        def _on_rollout_start(self) -> None:
            boundary.mark()
            if config.save_steps and self.num_timesteps >= self.next_state:
                self.next_state = _next_multiple(self.num_timesteps, config.save_steps)
                save_ppo(self.next_save)

        def _on_step(self) -> bool:
            if ctx.cancelled:
                self.stopped = True
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

    def save_ppo(next_save: int) -> None:
        if boundary.step > 0:
            data, extra = boundary.snapshot()
            save_state(boundary.step, {"phase": "ppo", "next_save": next_save, "boundary": extra}, {MODEL_FILE: data})

    callback = Callback()
    with ctx.stage(0.0, PPO_SHARE):  # one bar over both phases: PPO, then the checkpoints' roll-outs
        remaining = config.total_steps - model.num_timesteps
        if remaining > 0:
            model.learn(total_timesteps=remaining, callback=callback, reset_num_timesteps=state is None)
    venv.close()
    if ctx.cancelled:
        if not callback.stopped:  # stopped after its last update: that is the state
            boundary.mark()
        save_ppo(callback.next_save)
        raise JobCancelled("cancelled")
    if folder is not None and (not saved or saved[-1][0] < model.num_timesteps):
        path = folder / f"ppo_step_{model.num_timesteps:08d}.zip"
        model.save(str(path))
        saved.append((model.num_timesteps, project.add_checkpoint(
            ctx.run_id, kinds.SB3_PPO, path, step=model.num_timesteps, meta={"env_id": config.env_id, "algo": "PPO"}),
            str(path)))
    if config.save_steps:  # the PPO phase is done: a kill from here on keeps it
        save_state(model.num_timesteps, {"phase": "rollouts", "timesteps": model.num_timesteps, "rollouts": []})
    return int(model.num_timesteps)


def _next_multiple(step: int, every: int) -> int:
    """The first multiple of ``every`` after ``step`` (never, for ``every`` = 0)."""
    return (step // every + 1) * every if every else 2 ** 62
