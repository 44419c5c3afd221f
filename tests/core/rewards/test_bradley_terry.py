import math

import pytest
import torch

from rlhf_core.rewards.bradley_terry import bradley_terry_loss, pair_accuracy, preference_probability
from rlhf_core.rewards.outcomes import outcome_target


def test_lecture_worked_example():
    # r(y_w) = 1.23, r(y_l) = 4.59. The slide truncates p(y_w) to 0.0335 and reports
    # -ln 0.0335 = 3.396 nats; exactly, p = sigmoid(-3.36) = 0.033569 and the loss is 3.3941.
    r_w, r_l = torch.tensor([1.23]), torch.tensor([4.59])
    p = preference_probability(r_w, r_l)
    assert float(p) == pytest.approx(1 / (1 + math.exp(3.36)), rel=1e-6)
    assert float(p) == pytest.approx(0.0335, abs=1e-4)
    loss = bradley_terry_loss(r_w, r_l, torch.tensor([1.0]))
    assert float(loss) == pytest.approx(math.log1p(math.exp(3.36)), rel=1e-6)  # 3.3941
    assert float(loss) == pytest.approx(3.396, abs=3e-3)
    # the slide's printed 1.474 is the same quantity in log10
    assert float(loss) / math.log(10) == pytest.approx(1.474, abs=2e-3)


def test_tie_is_soft_label():
    r_a, r_b = torch.tensor([2.0]), torch.tensor([0.5])
    loss = bradley_terry_loss(r_a, r_b, torch.tensor([0.5]))
    p = torch.sigmoid(torch.tensor(1.5))
    expected = -(0.5 * torch.log(p) + 0.5 * torch.log(1 - p))
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    # a tie is minimised when the two rewards are equal
    assert float(bradley_terry_loss(torch.tensor([1.0]), torch.tensor([1.0]), torch.tensor([0.5]))) == pytest.approx(math.log(2))


def test_christiano_random_answer_model():
    r_a, r_b = torch.tensor([10.0]), torch.tensor([0.0])
    # P(a) ~ 1, so P' = 0.9 * 1 + 0.05 = 0.95 and labelling b as better costs -ln(0.05)
    loss = bradley_terry_loss(r_a, r_b, torch.tensor([0.0]), random_answer_prob=0.1)
    assert float(loss) == pytest.approx(-math.log(0.05), rel=1e-3)
    plain = bradley_terry_loss(r_a, r_b, torch.tensor([0.0]))
    assert float(plain) == pytest.approx(10.0, rel=1e-3)  # unbounded without the noise model


def test_gradient_pushes_preferred_up():
    r = torch.tensor([0.0, 0.0], requires_grad=True)
    bradley_terry_loss(r[:1], r[1:], torch.tensor([1.0])).backward()
    assert r.grad[0] < 0 < r.grad[1]


def test_outcome_targets_and_accuracy():
    assert outcome_target("left") == 1.0 and outcome_target("right") == 0.0 and outcome_target("tie") == 0.5
    assert outcome_target("skip") is None and outcome_target("both_bad") is None
    acc = pair_accuracy(torch.tensor([1.0, 0.0, 3.0, 2.0]), torch.tensor([0.0, 1.0, 1.0, 2.0]),
                        torch.tensor([1.0, 1.0, 0.0, 0.5]))
    assert acc == pytest.approx(1 / 3)  # tie excluded; one of three decided pairs right
