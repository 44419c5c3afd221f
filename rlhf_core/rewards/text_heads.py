"""An ensemble of small reward heads on a text reward model's frozen backbone: cheap disagreement for
choosing which text pairs to ask about.

A full ensemble of text reward models would cost K backbones. Here the backbone runs once per response:
its feature is the final hidden state of the token the reward model scores (the last non-pad token,
:meth:`rlhf_core.text.reward_model.TextRewardModel.features`), standardised over the responses at hand.
K linear heads (``hidden`` weights each, no bias: a reward's offset cancels in a comparison) read it;
each is fitted with the Bradley-Terry loss to its own bootstrap of the labels (Christiano et al. 2017's
ensemble, on a shared backbone), anchored to its own random draw from the score head's initialisation.
Where the labels pin a direction down the heads agree; elsewhere they keep their random differences.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from rlhf_core.rewards.bradley_terry import bradley_terry_loss
from rlhf_core.text.reward_model import TextRewardModel, format_pair_text


class HeadEnsemble(nn.Module):
    """K linear heads over standardised features; ``forward(features [n, hidden])`` -> rewards ``[K, n]``."""

    def __init__(self, hidden: int, members: int, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(members, hidden))
        self.register_buffer("mean", torch.zeros(hidden) if mean is None else mean.detach().clone().float())
        self.register_buffer("std", torch.ones(hidden) if std is None else std.detach().clone().float())

    @property
    def members(self) -> int:
        return int(self.weight.shape[0])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = (features.float() - self.mean) / self.std
        return self.weight @ x.T


@torch.no_grad()
def response_features(model: TextRewardModel, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], *,
                      batch_size: int = 16, on_batch: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Features ``[n, hidden]`` (float32) of ``responses[i]`` to ``prompts[i]``, the reward model's backbone
    in eval mode. ``on_batch(done, total)`` is called after each batch (progress, cancel)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    texts = [format_pair_text(tokenizer, p, r) for p, r in zip(prompts, responses)]
    was_training = model.training
    model.eval()
    parts = []
    try:
        for start in range(0, len(texts), batch_size):
            rows = model.tokenize(texts[start:start + batch_size], tokenizer)
            parts.append(model.features_ids(rows, tokenizer.pad_token_id).float().cpu())
            if on_batch is not None:
                on_batch(min(start + batch_size, len(texts)), len(texts))
    finally:
        model.train(was_training)
    hidden = int(model.backbone.config.hidden_size)
    return torch.cat(parts) if parts else torch.zeros(0, hidden)


def fit_heads(features: torch.Tensor, pairs: Sequence[tuple[int, int, float]], *, members: int = 5,
              steps: int = 200, seed: int = 0, standardise_over: torch.Tensor | None = None) -> HeadEnsemble:
    """K heads fitted to ``pairs`` = (row of the left response, row of the right, P(left better)) of ``features``.

    Member k: a random draw w0_k from the prior N(0, 1/(hidden+1)) (the score head's initialisation), then
    the Bradley-Terry loss on its own bootstrap of the pairs (n draws with replacement) plus the prior's pull
    towards its draw, (hidden+1)/2 * |w_k - w0_k|^2 per pair-set (an anchored ensemble, Pearce et al. 2018:
    each member is a sample of the posterior's shape; few labels leave the heads near their draws, many pin
    them down). Minimised with L-BFGS, at most ``steps`` iterations (the loss is convex). Features are
    standardised with the mean and std of ``standardise_over`` (default: ``features``). No pairs: the draws.
    """
    hidden = int(features.shape[1])
    base = features if standardise_over is None else standardise_over
    mean = base.mean(0) if len(base) else torch.zeros(hidden)
    std = base.std(0, unbiased=False).clamp_min(1e-6) if len(base) > 1 else torch.ones(hidden)
    heads = HeadEnsemble(hidden, members, mean, std)
    gen = torch.Generator().manual_seed(int(seed))
    anchors = torch.randn(members, hidden, generator=gen) / math.sqrt(hidden + 1)
    with torch.no_grad():
        heads.weight.copy_(anchors)
    if not pairs or steps <= 0:
        return heads.eval()
    rng = np.random.default_rng(seed)
    left = torch.tensor([a for a, _, _ in pairs], dtype=torch.long)
    right = torch.tensor([b for _, b, _ in pairs], dtype=torch.long)
    target = torch.tensor([t for _, _, t in pairs], dtype=torch.float64)
    x = ((features.float() - mean) / std).double()
    boot = torch.from_numpy(rng.integers(0, len(pairs), size=(members, len(pairs))))  # [K, n]: one bootstrap each
    dx, t = x[left[boot]] - x[right[boot]], target[boot]  # [K, n, hidden], [K, n]
    prior = (hidden + 1) / 2.0
    w = anchors.double().clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS([w], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        # the members' losses summed: they share no weights, so each reaches its own minimum
        optimiser.zero_grad(set_to_none=True)
        margin = (dx * w[:, None, :]).sum(-1)  # r(left) - r(right), [K, n]
        data = bradley_terry_loss(margin.reshape(-1), torch.zeros(margin.numel(), dtype=margin.dtype), t.reshape(-1),
                                  reduction="sum")
        loss = data + prior * ((w - anchors.double()) ** 2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        heads.weight.copy_(w.detach().float())
    return heads.eval()


@torch.no_grad()
def head_probs(heads: HeadEnsemble, features_left: torch.Tensor, features_right: torch.Tensor) -> np.ndarray:
    """P(left better) under each head for each pair: ``[pairs, members]``."""
    return torch.sigmoid(heads(features_left) - heads(features_right)).T.numpy().astype(np.float64)
