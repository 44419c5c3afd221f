"""Behavioural cloning on demonstration trajectories (discrete or continuous actions).

Discrete actions: cross-entropy on the demonstrated action. Continuous: mean-squared error of a
tanh-squashed mean scaled to the action bounds. The result is saved as a checkpoint of kind
``bc_policy`` that :class:`rlhf_core.envs.policies.BCPolicy` loads (tensors only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from rlhf_core import kinds
from rlhf_core.config import RENAMED_FIELDS, param, to_dict
from rlhf_core.envs.make import close_env, env_info, make_env
from rlhf_core.envs.policies import BCNet, BCPolicy, BCSpec
from rlhf_core.envs.rollout import rollout
from rlhf_core.envs.storage import load_arrays
from rlhf_core.jobs import JobContext
from rlhf_core.store.model_card import control_policy_card, final_metrics


@dataclass
class BCConfig:
    RENAMED_FROM = RENAMED_FIELDS["bc"]  # old field names still read (not a field: no annotation)
    env_id: str = param("Pendulum-v1", "Environment of the demonstrations.")
    demo_ids: list = param([], "Trajectory item ids to imitate (empty: every trajectory of this env "
                           "whose source is 'human', 'checkpoint' or 'import': a Minari dataset's).", each="id")
    epochs: int = param(50, "Passes over the demonstrations.", min=1, max=100_000)
    hidden: int = param(64, "Hidden units per layer.", min=4, max=4096)
    learning_rate: float = param(1e-3, "Adam learning rate.", min=0.0, min_inclusive=False)
    batch_size: int = param(256, "State-action pairs per step.", min=1)
    eval_episodes: int = param(2, "Episodes to evaluate the cloned policy on the true return.", min=0)
    seed: int = param(0, "Random seed.", min=0)


def train_bc(config: BCConfig, ctx: JobContext) -> dict:
    project = ctx.project()
    if config.demo_ids:
        demos = [project.get_item(int(i)) for i in config.demo_ids]
        if any(d is None or d["kind"] != "trajectory" for d in demos):
            raise ValueError("every demo id must be a trajectory of this project")
    else:
        demos = [t for t in project.items("trajectory") if t["env_id"] == config.env_id
                 and t["source"] in ("human", "checkpoint", "import")]
    if not demos:
        raise ValueError(f"no demonstrations of {config.env_id} to imitate")
    env = make_env(config.env_id, render=False)
    try:
        info = env_info(env)
        obs, acts = [], []
        for d in demos:
            arrays = load_arrays(project, d)
            obs.append(arrays["observations"][:-1].reshape(len(arrays["actions"]), -1))
            acts.append(arrays["actions"])
        x = torch.from_numpy(np.concatenate(obs).astype(np.float32))
        y = torch.from_numpy(np.concatenate(acts).astype(np.float32))
        spec = BCSpec(obs_dim=x.shape[1], discrete=info.discrete,
                      n_out=info.n_actions if info.discrete else info.action_dim, hidden=config.hidden,
                      action_low=info.action_low, action_high=info.action_high)
        torch.manual_seed(config.seed)
        net = BCNet(spec)
        opt = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
        gen = torch.Generator().manual_seed(config.seed)
        n = len(x)
        steps_per_epoch = max(1, n // config.batch_size)
        loss_value = float("nan")
        for epoch in range(config.epochs):
            ctx.raise_if_cancelled()
            perm = torch.randperm(n, generator=gen)
            total = 0.0
            for k in range(steps_per_epoch):
                idx = perm[k * config.batch_size:(k + 1) * config.batch_size]
                out = net(x[idx])
                if spec.discrete:
                    loss = F.cross_entropy(out, y[idx].long().view(-1))
                else:
                    loss = F.mse_loss(out, y[idx].view(len(idx), -1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
            loss_value = total / steps_per_epoch
            ctx.metrics(epoch, {"bc/loss": loss_value})
            ctx.progress(epoch + 1, config.epochs, f"epoch {epoch + 1}/{config.epochs}  loss {loss_value:.4f}")
        policy = BCPolicy(net)
        returns = [rollout(env, policy, seed=config.seed + 10_000 + i, render=False).true_return
                   for i in range(config.eval_episodes)]
    finally:
        close_env(env)
    path = project.run_folder(ctx.run_id) / "bc_policy.pt"
    policy.save(path)
    cid = project.add_checkpoint(ctx.run_id, kinds.BC_POLICY, path, step=config.epochs,
                                 meta={"env_id": config.env_id, "demos": [d["id"] for d in demos]})
    result = {"checkpoint_id": cid, "final_loss": loss_value, "pairs": int(n), "demos": len(demos),
              "eval_returns": returns, "mean_eval_return": float(np.mean(returns)) if returns else None}
    control_policy_card(job="bc", config=to_dict(config), env_id=config.env_id, files=[path.name], algo="BC",
                        run_id=ctx.run_id, project=project.name,
                        training_data={"demos": len(demos), "state_action_pairs": int(n), "epochs": config.epochs},
                        metrics=final_metrics(result, exclude=("pairs", "demos"))).write(path.parent)
    return result
