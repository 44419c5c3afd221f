"""Fit a reward ensemble to preference pairs with the Bradley-Terry loss.

Each member trains on its own bootstrap sample of the training pairs (Christiano et al.); a
held-out split measures pair accuracy; training stops early when the held-out loss has not
improved for ``patience`` evaluations (the best weights are kept). Segment returns are sums of
per-step rewards over the states the segment reaches; ties are the soft label 0.5.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

from rlhf_core.jobs import JobContext, NullContext
from rlhf_core.rewards.bradley_terry import bradley_terry_loss, pair_accuracy
from rlhf_core.rewards.datasets import PairSet
from rlhf_core.rewards.networks import RewardEnsemble, RewardNetSpec


@dataclass
class FitSettings:
    members: int = 3
    hidden: int = 64
    layers: int = 2
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    random_answer_prob: float = 0.0
    heldout_fraction: float = 0.1
    eval_every: int = 50
    patience: int = 6
    seed: int = 0


class _Tensors:
    def __init__(self, pairs: PairSet):
        length = max(max(s.end - s.start for s in pairs.first), max(s.end - s.start for s in pairs.second))
        self.obs = torch.from_numpy(pairs.obs)
        i1, m1 = pairs.index_arrays("first", length)
        i2, m2 = pairs.index_arrays("second", length)
        self.i1, self.m1 = torch.from_numpy(i1), torch.from_numpy(m1)
        self.i2, self.m2 = torch.from_numpy(i2), torch.from_numpy(m2)
        self.target = torch.from_numpy(pairs.target)

    def returns(self, net, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r1 = (net(self.obs[self.i1[rows]]) * self.m1[rows]).sum(-1)
        r2 = (net(self.obs[self.i2[rows]]) * self.m2[rows]).sum(-1)
        return r1, r2


def fit_reward_ensemble(pairs: PairSet, settings: FitSettings, ctx: JobContext | None = None,
                        step_offset: int = 0) -> tuple[RewardEnsemble, dict]:
    ctx = ctx or NullContext()
    if len(pairs) < 2:
        raise ValueError("need at least two preference pairs to train a reward model")
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    data = _Tensors(pairs)
    n = len(pairs)
    perm = rng.permutation(n)
    n_held = int(round(n * settings.heldout_fraction)) if n >= 10 else 0
    held = torch.from_numpy(perm[:n_held])
    train = perm[n_held:]
    spec = RewardNetSpec(obs_dim=pairs.obs.shape[1], hidden=settings.hidden, layers=settings.layers)
    ensemble = RewardEnsemble(spec, settings.members)
    stats: dict = {"pairs": n, "heldout_pairs": n_held, "members": []}
    total = settings.members * settings.steps
    for k, net in enumerate(ensemble.members):
        boot = torch.from_numpy(rng.choice(train, size=len(train), replace=True))  # bootstrap of the pairs
        opt = torch.optim.Adam(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        gen = torch.Generator().manual_seed(settings.seed * 1000 + k)
        best, best_state, bad = math.inf, None, 0
        last = {}
        for step in range(settings.steps):
            ctx.raise_if_cancelled()
            rows = boot[torch.randint(len(boot), (min(settings.batch_size, len(boot)),), generator=gen)]
            r1, r2 = data.returns(net, rows)
            loss = bradley_terry_loss(r1, r2, data.target[rows], random_answer_prob=settings.random_answer_prob)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            values = {f"reward_model/m{k}_loss": float(loss.detach())}
            if (step + 1) % settings.eval_every == 0 or step == settings.steps - 1:
                values[f"reward_model/m{k}_train_accuracy"] = pair_accuracy(r1.detach(), r2.detach(), data.target[rows])
                if n_held:
                    with torch.no_grad():
                        h1, h2 = data.returns(net, held)
                        h_loss = float(bradley_terry_loss(h1, h2, data.target[held]))
                        values[f"reward_model/m{k}_heldout_loss"] = h_loss
                        values[f"reward_model/m{k}_heldout_accuracy"] = pair_accuracy(h1, h2, data.target[held])
                    if h_loss < best - 1e-4:
                        best, best_state, bad = h_loss, copy.deepcopy(net.state_dict()), 0
                    else:
                        bad += 1
                last = values
                ctx.metrics(step_offset + k * settings.steps + step, values)
                if n_held and bad >= settings.patience:
                    break
            done = k * settings.steps + step + 1
            if step % 10 == 0:
                ctx.progress(done, total, f"reward model {k + 1}/{settings.members}: step {step + 1}")
        if best_state is not None:
            net.load_state_dict(best_state)
        stats["members"].append({"steps": step + 1, "heldout_loss": None if math.isinf(best) else best,
                                 "heldout_accuracy": last.get(f"reward_model/m{k}_heldout_accuracy")})
    ensemble.eval()
    if n_held:
        with torch.no_grad():
            h1, h2 = data.returns(ensemble.predict, held)
            stats["heldout_accuracy"] = pair_accuracy(h1, h2, data.target[held])
    return ensemble, stats


@torch.no_grad()
def predicted_returns(ensemble: RewardEnsemble, observations: list[np.ndarray]) -> np.ndarray:
    """Predicted return of each trajectory: the sum of rewards of the states it reaches."""
    out = []
    for obs in observations:
        x = torch.from_numpy(np.asarray(obs[1:], dtype=np.float32).reshape(len(obs) - 1, -1))
        out.append(float(ensemble.predict(x).sum()))
    return np.asarray(out)


@torch.no_grad()
def reward_stats(ensemble: RewardEnsemble, obs: np.ndarray) -> tuple[float, float]:
    """Mean and std of the predicted per-step reward over a set of states (for normalising)."""
    r = ensemble.predict(torch.from_numpy(np.asarray(obs, dtype=np.float32)))
    return float(r.mean()), float(r.std().clamp_min(1e-6))
