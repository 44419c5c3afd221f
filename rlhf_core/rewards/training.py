"""Fit a reward ensemble to preference pairs with the Bradley-Terry loss.

Each member trains on its own bootstrap sample of the training pairs (Christiano et al.); a
held-out split measures pair accuracy; training stops early when the held-out loss has not
improved for ``patience`` evaluations (the best weights are kept). Segment returns are sums of
per-step rewards over the states the segment reaches; ties are the soft label 0.5.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from rlhf_core import devices
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
    l1: float = 0.0  # sparse first layer: penalty on |weight| x its input's std over the pairs' states
    random_answer_prob: float = 0.0
    heldout_fraction: float = 0.1
    eval_every: int = 50
    patience: int = 6
    seed: int = 0
    image_shape: tuple = ()  # (C, H, W): a CNN over pixel observations (rows of C*H*W); (): an MLP
    device: str = "cpu"  # where a CNN trains (rlhf_core.devices spellings); MLPs always train on the CPU


@dataclass
class FitState:
    """Where a batched fit stands after its ``step`` (0-based, the fit's own numbering): what resuming
    it needs. ``tensors`` go to torch.save (weights, Adam, generators, best weights), ``extra`` to JSON."""

    step: int
    tensors: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


class _Tensors:
    def __init__(self, pairs: PairSet):
        length = max(max(s.end - s.start for s in pairs.first), max(s.end - s.start for s in pairs.second))
        self.obs = torch.from_numpy(pairs.obs)
        i1, m1 = pairs.index_arrays("first", length)
        i2, m2 = pairs.index_arrays("second", length)
        self.i1, self.m1 = torch.from_numpy(i1), torch.from_numpy(m1)
        self.i2, self.m2 = torch.from_numpy(i2), torch.from_numpy(m2)
        self.target = torch.from_numpy(pairs.target)
        self.distinct_steps = False  # True: score each distinct real step once (no padding), for CNNs
        self.device = None  # a CNN on a GPU: its images go there, its scores come back to the CPU

    def returns(self, net, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.distinct_steps:
            return self._distinct_returns(net, rows)
        r1 = (net(self.obs[self.i1[rows]]) * self.m1[rows]).sum(-1)
        r2 = (net(self.obs[self.i2[rows]]) * self.m2[rows]).sum(-1)
        return r1, r2

    def _distinct_returns(self, net, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same sums, the network run once per distinct state of the batch: a CNN's cost is per
        image, and padding plus overlapping snippets would otherwise be scored again."""
        idx = torch.cat([self.i1[rows], self.i2[rows]])
        real = torch.cat([self.m1[rows], self.m2[rows]]) > 0
        states, where = torch.unique(idx[real], return_inverse=True)
        segment = torch.arange(len(idx)).unsqueeze(1).expand_as(idx)[real]
        images = self.obs[states]
        scores = net(images) if self.device is None else net(images.to(self.device)).cpu()
        r = torch.zeros(len(idx), dtype=scores.dtype).index_add(0, segment, scores[where])
        return r[: len(rows)], r[len(rows):]


def fit_reward_ensemble(pairs: PairSet, settings: FitSettings, ctx: JobContext | None = None,
                        step_offset: int = 0, batched: bool = True, *,
                        save: Callable[[FitState], None] | None = None, save_steps: int = 0,
                        resume: FitState | None = None) -> tuple[RewardEnsemble, dict]:
    """Fit the ensemble; returns it (eval mode) and per-member statistics. ``settings.image_shape`` makes
    it an ensemble of CNNs over pixel observations (:mod:`rlhf_core.envs.pixels`), fitted member by member.

    ``batched`` (default) trains all members at once as one stacked network (one batched matmul per
    layer, one fused Adam step): the same losses, bootstraps, minibatches, early stopping and
    metrics as training them one after another (``batched=False``, kept as the reference), but a
    third of the per-op overhead that dominates these small networks on a CPU.

    Resuming (batched fit only): ``save(state)`` is called with the state after the last finished
    step when cancelled and every ``save_steps`` steps; ``resume`` (such a state, on the same pairs
    and settings) continues the fit at its next step, with the metrics an uninterrupted fit logs.
    """
    ctx = ctx or NullContext()
    if len(pairs) < 2:
        raise ValueError("need at least two preference pairs to train a reward model")
    if settings.l1 > 0 and settings.image_shape:
        raise ValueError("an L1 penalty applies to rewards over state vectors, not to CNN rewards over images")
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    data = _Tensors(pairs)
    n = len(pairs)
    perm = rng.permutation(n)
    n_held = int(round(n * settings.heldout_fraction)) if n >= 10 else 0
    held = torch.from_numpy(perm[:n_held])
    train = perm[n_held:]
    if settings.image_shape:
        image_shape = tuple(int(v) for v in settings.image_shape)
        if len(image_shape) != 3 or int(np.prod(image_shape)) != pairs.obs.shape[1]:
            raise ValueError(f"the pairs' observations have {pairs.obs.shape[1]} numbers, not images of shape "
                             f"{image_shape} (C, H, W)")
        spec = RewardNetSpec(obs_dim=pairs.obs.shape[1], kind="cnn", image_shape=image_shape)
    else:
        spec = RewardNetSpec(obs_dim=pairs.obs.shape[1], hidden=settings.hidden, layers=settings.layers)
    if spec.kind == "mlp":
        data.obs = data.obs.float()  # images kept as uint8 go to an MLP as numbers
    else:
        data.distinct_steps = True
    ensemble = RewardEnsemble(spec, settings.members)
    device = devices.resolve_device(settings.device) if spec.kind == "cnn" else torch.device("cpu")
    if device.type != "cpu":
        data.device = device
        ensemble.to(device)
    stats: dict = {"pairs": n, "heldout_pairs": n_held, "members": []}
    if batched and spec.kind == "mlp":
        _fit_batched(ensemble, data, train, held, rng, settings, ctx, step_offset, stats, save, save_steps, resume)
    elif save is not None or resume is not None:
        raise ValueError("only the batched fit of an MLP ensemble can be resumed")
    else:
        _fit_sequential(ensemble, data, train, held, rng, settings, ctx, step_offset, stats)
    ensemble.eval()
    if data.device is not None:  # the saved and returned ensemble lives on the CPU like every other
        ensemble.to("cpu")
        data.device = None
    if n_held:
        with torch.no_grad():
            h1, h2 = data.returns(ensemble.predict, held)
            stats["heldout_accuracy"] = pair_accuracy(h1, h2, data.target[held])
    return ensemble, stats


def _l1_scale(data: _Tensors, settings: FitSettings) -> torch.Tensor | None:
    """Each input's standard deviation over the pairs' states (the L1 penalty's per-weight scale, so that
    a feature measured in small units is not penalised more), or None without an L1 penalty."""
    if settings.l1 <= 0:
        return None
    return data.obs.float().std(0).clamp_min(1e-6)


def _fit_sequential(ensemble, data, train, held, rng, settings, ctx, step_offset, stats) -> None:
    """The reference: one member after another, each with its own Adam."""
    n_held = len(held)
    total = settings.members * settings.steps
    scale = _l1_scale(data, settings)
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
            penalty = 0.0 if scale is None else settings.l1 * (net.net[0].weight.abs() * scale).sum()
            opt.zero_grad(set_to_none=True)
            (loss + penalty).backward()  # the logged loss is the Bradley-Terry loss alone, as in the batched fit
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
                ctx.metrics(step_offset + step, values)  # members share one step axis
                if n_held and bad >= settings.patience:
                    break
            done = k * settings.steps + step + 1
            if step % 10 == 0:
                ctx.progress(done, total, f"reward model {k + 1}/{settings.members}: step {step + 1}")
        if best_state is not None:
            net.load_state_dict(best_state)
        stats["members"].append({"steps": step + 1, "heldout_loss": None if math.isinf(best) else best,
                                 "heldout_accuracy": last.get(f"reward_model/m{k}_heldout_accuracy")})


class _StackedMLP:
    """The members of an MLP ensemble as stacked leaf tensors: layer i is ``x @ W[i] + b[i]`` with
    W [M, in, out] and b [M, 1, out], applied to x [M, N, in] by one ``baddbmm`` for all members."""

    def __init__(self, members):
        linears = [[m for m in net.net if isinstance(m, torch.nn.Linear)] for net in members]
        self.weights = [torch.stack([lin[i].weight.detach().t() for lin in linears]).contiguous().requires_grad_()
                        for i in range(len(linears[0]))]
        self.biases = [torch.stack([lin[i].bias.detach()[None] for lin in linears]).contiguous().requires_grad_()
                       for i in range(len(linears[0]))]
        self.linears = linears

    def parameters(self) -> list[torch.Tensor]:
        return self.weights + self.biases

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = torch.relu(x)
        return x.squeeze(-1)

    def snapshot(self, k: int) -> list[torch.Tensor]:
        return [t[k].detach().clone() for t in self.weights + self.biases]

    @torch.no_grad()
    def write_member(self, k: int, saved: list[torch.Tensor] | None = None) -> None:
        """Copy member k (its current or ``saved`` weights) into its ``nn.Linear`` layers."""
        saved = saved if saved is not None else self.snapshot(k)
        n = len(self.weights)
        for i, lin in enumerate(self.linears[k]):
            lin.weight.copy_(saved[i].t())
            lin.bias.copy_(saved[n + i][0])


def _fit_batched(ensemble, data, train, held, rng, settings, ctx, step_offset, stats, save=None, save_steps=0,
                 resume: FitState | None = None) -> None:
    """All members in one stacked network: the same per-member data, losses and early stopping."""
    members = settings.members
    n_held = len(held)
    boots = [torch.from_numpy(rng.choice(train, size=len(train), replace=True)) for _ in range(members)]
    gens = [torch.Generator().manual_seed(settings.seed * 1000 + k) for k in range(members)]
    net = _StackedMLP(ensemble.members)
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay, fused=True)
    best = [math.inf] * members
    best_state: list = [None] * members
    bad = [0] * members
    last: list[dict] = [{} for _ in range(members)]
    done_steps = [0] * members  # steps a member has trained (set when it stops early or at the end)
    active = list(range(members))
    batch = min(settings.batch_size, len(train))
    obs = data.obs
    scale = _l1_scale(data, settings)
    # The cost is the MLP over states. When the table of all states is smaller than one minibatch's
    # snippet steps (Pendulum: 25 demos x 201 states vs 64 pairs x 2 x 50 steps), score every
    # state once per step and pick the snippets' rewards out of it; else score the snippet steps.
    whole_table = len(obs) <= 2 * batch * data.i1.shape[1]
    table = obs.expand(members, -1, -1) if whole_table else None

    def returns(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # rows [M, B] -> r1, r2 [M, B]
        idx = torch.cat([data.i1[rows], data.i2[rows]], dim=1)  # [M, 2B, L]
        mask = torch.cat([data.m1[rows], data.m2[rows]], dim=1)
        m, b2, length = idx.shape
        if whole_table:
            per_step = torch.gather(net(table), 1, idx.reshape(m, -1))
        else:
            per_step = net(obs[idx.reshape(m, -1)])
        r = (per_step.reshape(m, b2, length) * mask).sum(-1)
        return r[:, : b2 // 2], r[:, b2 // 2:]

    def state(done: int) -> FitState:
        saved = [b if b is not None else [] for b in best_state]
        return FitState(done, {"weights": [t.detach().clone() for t in net.weights + net.biases],
                               "optimizer": opt.state_dict(), "generators": [g.get_state() for g in gens],
                               "best_state": saved},
                        {"best": best, "bad": bad, "last": last, "done_steps": done_steps, "active": active,
                         "members": members})

    start = 0
    if resume is not None:
        if resume.extra.get("members") != members or len(resume.tensors["weights"]) != len(net.parameters()):
            raise ValueError("The saved training state does not fit this reward model; start a new run instead.")
        with torch.no_grad():
            for t, saved in zip(net.weights + net.biases, resume.tensors["weights"]):
                t.copy_(saved)
        opt.load_state_dict(resume.tensors["optimizer"])
        for g, saved in zip(gens, resume.tensors["generators"]):
            g.set_state(saved)
        best_state = [list(b) or None for b in resume.tensors["best_state"]]
        best, bad = [float(b) for b in resume.extra["best"]], list(resume.extra["bad"])
        last, done_steps, active = resume.extra["last"], list(resume.extra["done_steps"]), list(resume.extra["active"])
        start = resume.step + 1

    step = start - 1
    for step in range(start, settings.steps):
        try:
            ctx.raise_if_cancelled()
        except Exception:  # cancelled: save where the last finished step left the fit
            if save is not None and step > 0:
                save(state(step - 1))
            raise
        rows = torch.stack([boot[torch.randint(len(boot), (batch,), generator=gen)] for boot, gen in zip(boots, gens)])
        r1, r2 = returns(rows)
        target = data.target[rows]
        per_member = bradley_terry_loss(r1.reshape(-1), r2.reshape(-1), target.reshape(-1),
                                        random_answer_prob=settings.random_answer_prob,
                                        reduction="none").reshape(members, batch).mean(1)
        penalty = 0.0 if scale is None else settings.l1 * (net.weights[0].abs() * scale[:, None]).sum()
        opt.zero_grad(set_to_none=True)
        (per_member.sum() + penalty).backward()  # members share no weights: each gets the gradient of its own loss
        opt.step()
        if (step + 1) % settings.eval_every == 0 or step == settings.steps - 1:
            losses = per_member.detach().tolist()
            if n_held:
                with torch.no_grad():
                    h1, h2 = returns(held.expand(members, -1))
                    h_target = data.target[held]
                    h_losses = [float(bradley_terry_loss(h1[k], h2[k], h_target)) for k in range(members)]
            for k in list(active):
                values = {f"reward_model/m{k}_loss": losses[k],
                          f"reward_model/m{k}_train_accuracy": pair_accuracy(r1[k].detach(), r2[k].detach(), target[k])}
                if n_held:
                    values[f"reward_model/m{k}_heldout_loss"] = h_losses[k]
                    values[f"reward_model/m{k}_heldout_accuracy"] = pair_accuracy(h1[k], h2[k], h_target)
                    if h_losses[k] < best[k] - 1e-4:
                        best[k], best_state[k], bad[k] = h_losses[k], net.snapshot(k), 0
                    else:
                        bad[k] += 1
                last[k] = values
                ctx.metrics(step_offset + step, values)  # members share one step axis
                if n_held and bad[k] >= settings.patience:
                    active.remove(k)  # stops here; its later updates are discarded (best weights kept)
                    done_steps[k] = step + 1
            if not active:
                break
        if step % 10 == 0:
            ctx.progress(step + 1, settings.steps, f"reward model ({members} members at once): step {step + 1}")
        if save is not None and save_steps and (step + 1) % save_steps == 0 and step + 1 < settings.steps:
            save(state(step))
    for k in range(members):
        if k in active:
            done_steps[k] = step + 1
        net.write_member(k, best_state[k])
        stats["members"].append({"steps": done_steps[k], "heldout_loss": None if math.isinf(best[k]) else best[k],
                                 "heldout_accuracy": last[k].get(f"reward_model/m{k}_heldout_accuracy")})


@torch.no_grad()
def pair_set_accuracy(ensemble: RewardEnsemble, pairs: PairSet) -> float:
    """The ensemble's accuracy on ``pairs`` (e.g. snippets of held-out trajectories): the fraction of
    non-tie pairs whose predicted order matches the label; nan if all are ties."""
    data = _Tensors(pairs)
    if ensemble.spec.kind == "mlp":
        data.obs = data.obs.float()
    else:
        data.distinct_steps = True
    r1, r2 = data.returns(ensemble.predict, torch.arange(len(pairs)))
    return pair_accuracy(r1, r2, data.target)


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
