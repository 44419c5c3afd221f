"""Fit a reward network to synthetic preferences over feature vectors (the workbench's self-test).

A small, fully known problem that exercises the whole pipeline in seconds: items are random
feature vectors x, the hidden true reward is r*(x) = w.x + 0.5 sin(3 x_0), a simulated oracle
labels random pairs with the Bradley-Terry model of r* (``teacher="noisy"``: Bernoulli(sigmoid(
beta * dr)); ``"oracle"``: always the better one), and an MLP reward model is trained with the
Bradley-Terry loss (:mod:`rlhf_core.rewards.bradley_terry`). Because r* is known we can report how
well the learned reward correlates with it. The app's smoke test and the GUI-latency benchmark use
this job; it is also a quick way to see what label noise does to a reward model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from rlhf_core import kinds
from rlhf_core.config import RENAMED_FIELDS, param
from rlhf_core.jobs import JobContext
from rlhf_core.rewards.bradley_terry import bradley_terry_loss, pair_accuracy
from rlhf_core.rewards.networks import MLPReward, RewardNetSpec


@dataclass
class SyntheticPreferenceConfig:
    RENAMED_FROM = RENAMED_FIELDS["synthetic_preferences"]  # old field names still read (not a field: no annotation)
    n_items: int = param(300, "Number of synthetic items (feature vectors).", min=4, max=1_000_000)
    n_features: int = param(8, "Features per item.", min=1, max=4096)
    n_pairs: int = param(1500, "Labelled pairs drawn at random.", min=2, max=10_000_000)
    teacher: str = param("noisy", "Simulated labeller: 'oracle' always picks the higher true reward; "
                         "'noisy' answers Bernoulli(sigmoid(beta * dR)).", choices=("oracle", "noisy"))
    beta: float = param(4.0, "Rationality of the noisy teacher (higher = fewer mistakes).",
                        min=0.0, min_inclusive=False)
    hidden: int = param(64, "Hidden units in each of the reward MLP's two layers.", min=1, max=8192)
    steps: int = param(200, "Optimisation steps.", min=1, max=10_000_000)
    batch_size: int = param(64, "Pairs per optimisation step.", min=1, max=1_000_000)
    learning_rate: float = param(3e-3, "Adam learning rate.", min=0.0, min_inclusive=False, max=10.0)
    weight_decay: float = param(1e-4, "Adam weight decay (L2).", min=0.0)
    heldout_fraction: float = param(0.2, "Fraction of pairs held out for accuracy.", min=0.0, max=0.9)
    eval_every: int = param(20, "Evaluate held-out accuracy every N steps.", min=1)
    seed: int = param(0, "Random seed (data and initialisation).", min=0)
    save: bool = param(True, "Save the trained reward model in the project.")

    def check(self) -> list[str]:
        problems = []
        if round(self.n_pairs * self.heldout_fraction) >= self.n_pairs:
            problems.append("heldout_fraction leaves no training pairs")
        return problems


def _reward_mlp(n_features: int, hidden: int) -> MLPReward:
    """r(x): two hidden ReLU layers and a scalar output."""
    return MLPReward(RewardNetSpec(obs_dim=n_features, hidden=hidden, layers=2))


def make_problem(config: SyntheticPreferenceConfig) -> dict[str, np.ndarray]:
    """Items, their true rewards, and labelled pairs (left, right, P(left better) label)."""
    rng = np.random.default_rng(config.seed)
    x = rng.standard_normal((config.n_items, config.n_features)).astype(np.float32)
    w = rng.standard_normal(config.n_features).astype(np.float32) / np.sqrt(config.n_features)
    true_r = x @ w + 0.5 * np.sin(3.0 * x[:, 0])
    left = rng.integers(0, config.n_items, config.n_pairs)
    right = (left + rng.integers(1, config.n_items, config.n_pairs)) % config.n_items  # never == left
    dr = true_r[left] - true_r[right]
    if config.teacher == "oracle":
        label = (dr > 0).astype(np.float32)
    else:
        p_left = 1.0 / (1.0 + np.exp(-config.beta * dr))
        label = (rng.random(config.n_pairs) < p_left).astype(np.float32)
    return {"x": x, "true_r": true_r.astype(np.float32), "left": left, "right": right, "label": label}


def train_synthetic_preferences(config: SyntheticPreferenceConfig, ctx: JobContext) -> dict:
    # ------------------------------------------------------------------ data
    problem = make_problem(config)
    torch.manual_seed(config.seed)
    x = torch.from_numpy(problem["x"])
    left = torch.from_numpy(problem["left"])
    right = torch.from_numpy(problem["right"])
    label = torch.from_numpy(problem["label"])
    n_held = int(round(config.n_pairs * config.heldout_fraction))
    perm = torch.randperm(config.n_pairs, generator=torch.Generator().manual_seed(config.seed))
    held, train = perm[:n_held], perm[n_held:]

    model = _reward_mlp(config.n_features, config.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed + 1)

    def evaluate() -> dict[str, float]:
        with torch.no_grad():
            r = model(x)
            out = {"reward_model/true_correlation": float(np.corrcoef(r.numpy(), problem["true_r"])[0, 1])}
            if n_held:
                rl, rr, t = r[left[held]], r[right[held]], label[held]
                out["reward_model/heldout_loss"] = float(bradley_terry_loss(rl, rr, t))
                out["reward_model/heldout_accuracy"] = pair_accuracy(rl, rr, t)
        return out

    # ------------------------------------------------------------------ optimise
    t0 = time.perf_counter()
    last_eval: dict[str, float] = {}
    loss_value = float("nan")
    for step in range(config.steps):
        ctx.raise_if_cancelled()
        values: dict[str, float] = {}
        if step == 0:
            # the untrained baseline; it also makes every key exist from the first step on, so
            # the live plot lays out its curves once instead of again mid-run
            values.update(evaluate())
        batch = train[torch.randint(len(train), (min(config.batch_size, len(train)),), generator=gen)]
        r_left, r_right = model(x[left[batch]]), model(x[right[batch]])
        loss = bradley_terry_loss(r_left, r_right, label[batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_value = float(loss.detach())
        values["reward_model/loss"] = loss_value
        values["reward_model/train_accuracy"] = pair_accuracy(r_left.detach(), r_right.detach(), label[batch])
        if step == 0 or (step + 1) % config.eval_every == 0 or step == config.steps - 1:
            if step:
                last_eval = evaluate()
                values.update(last_eval)
            values["time/steps_per_second"] = (step + 1) / max(time.perf_counter() - t0, 1e-9)
        ctx.metrics(step, values)
        ctx.progress(step + 1, config.steps, f"step {step + 1}/{config.steps}  loss {loss_value:.3f}")

    # ------------------------------------------------------------------ save
    result = {
        "final_loss": loss_value,
        "heldout_accuracy": last_eval.get("reward_model/heldout_accuracy"),
        "heldout_pairs": n_held,
        "true_correlation": last_eval.get("reward_model/true_correlation"),
        "steps_per_second": config.steps / max(time.perf_counter() - t0, 1e-9),
    }
    if config.save and ctx.project_path is not None and ctx.run_id is not None:
        project = ctx.project()
        path = project.run_folder(ctx.run_id) / "reward_mlp.pt"
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, path)
        project.add_checkpoint(ctx.run_id, kinds.REWARD_MLP, path, step=config.steps,
                               meta={"n_features": config.n_features, "hidden": config.hidden})
        result["checkpoint"] = project.relpath(path)
    return result


def load_reward_mlp(path, n_features: int, hidden: int) -> MLPReward:
    """Load a saved reward MLP (tensors only: ``weights_only=True``)."""
    model = _reward_mlp(n_features, hidden)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model
