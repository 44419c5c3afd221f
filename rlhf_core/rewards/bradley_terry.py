"""The Bradley-Terry preference model, written the way the lecture does.

P(a > b) = exp R(a) / (exp R(a) + exp R(b)) = sigmoid(R(a) - R(b)); loss = -log P(preferred > other).
R is a scalar reward for a response, or the SUM of per-step rewards over a clip/trajectory.
Stack the two returns as logits ``[batch, 2]`` and take the cross-entropy against the label:
column 0 is the left item, column 1 the right one. Ties are the soft label (0.5, 0.5).

Worked example from the lecture: R(y_w) = 1.23, R(y_l) = 4.59 -> p(y_w) = 0.0335,
loss = -ln 0.0335 = 3.396 nats (the slide prints 1.474, which is -log10).

Christiano et al. (2017) assume a 10 % chance the person answered at random:
P' = (1 - e) * P + e / 2 with e = 0.1, i.e. P' = 0.9 P + 0.05.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    return_left: torch.Tensor,
    return_right: torch.Tensor,
    target_left: torch.Tensor,
    *,
    random_answer_prob: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy of the Bradley-Terry model against (soft) labels.

    ``target_left`` holds P(left is better) per pair: 1, 0 or 0.5 for a tie.
    ``random_answer_prob`` is Christiano's e (0.1 in the paper); 0 gives the plain model.
    """
    logits = torch.stack([return_left, return_right], dim=-1)  # [batch, 2]
    target = torch.stack([target_left, 1.0 - target_left], dim=-1).to(logits.dtype)
    if random_answer_prob > 0.0:
        probs = (1.0 - random_answer_prob) * logits.softmax(dim=-1) + random_answer_prob / 2.0
        per_pair = -(target * probs.log()).sum(dim=-1)
    else:
        per_pair = F.cross_entropy(logits, target, reduction="none")
    if reduction == "none":
        return per_pair
    if reduction == "sum":
        return per_pair.sum()
    return per_pair.mean()


def preference_probability(return_left: torch.Tensor, return_right: torch.Tensor) -> torch.Tensor:
    """P(left is better) under Bradley-Terry: sigmoid(R_left - R_right)."""
    return torch.sigmoid(return_left - return_right)


def pair_accuracy(return_left: torch.Tensor, return_right: torch.Tensor, target_left: torch.Tensor) -> float:
    """Fraction of non-tie pairs whose predicted order matches the label (nan if all are ties)."""
    decided = target_left != 0.5
    if not bool(decided.any()):
        return float("nan")
    predicted_left = (return_left > return_right)[decided]
    labelled_left = (target_left > 0.5)[decided]
    return float((predicted_left == labelled_left).float().mean())
