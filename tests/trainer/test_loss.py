"""The loss against hand-computed values for each loss_type, weights and clipping."""

from __future__ import annotations

import math

import pytest
import torch
from ccapo_trainer.loss import LossConfig, policy_loss

# Two sequences of three token slots; the second has only two real tokens.
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
ADV = torch.tensor([1.0, -2.0])
OLD = torch.zeros(2, 3)
# ratios: exp(0)=1, exp(ln 1.5)=1.5 (clipped above 1.2 for A>0), exp(ln 0.5)=0.5 (clipped below 0.8 for A<0)
NEW = torch.tensor([[0.0, math.log(1.5), 0.0], [math.log(0.5), 0.0, 0.0]])


def per_token_expected() -> torch.Tensor:
    # A=+1: -min(1*1, 1*1) = -1; -min(1.5, 1.2) = -1.2; -1.
    # A=-2: -min(0.5*-2, 0.8*-2) = -min(-1, -1.6) = 1.6; -min(-2, -2) = 2; (padding) 2.
    return torch.tensor([[-1.0, -1.2, -1.0], [1.6, 2.0, 2.0]])


@pytest.mark.parametrize(
    ("loss_type", "expected"),
    [
        ("dapo", (-1 - 1.2 - 1 + 1.6 + 2) / 5),
        ("grpo", ((-1 - 1.2 - 1) / 3 + (1.6 + 2) / 2) / 2),
        ("dr_grpo", (-1 - 1.2 - 1 + 1.6 + 2) / (2 * 3)),
    ],
)
def test_each_loss_type_by_hand(loss_type, expected):
    out = policy_loss(NEW, OLD, ADV, MASK, LossConfig(loss_type=loss_type))
    assert out.loss.item() == pytest.approx(expected)
    assert out.metrics["clip_ratio/high_mean"] == pytest.approx(1 / 5)
    assert out.metrics["clip_ratio/low_mean"] == pytest.approx(1 / 5)


def test_weights_multiply_the_per_token_surrogate():
    weights = torch.tensor([[2.0, 0.5, 1.0], [0.0, 3.0, 9.0]])
    out = policy_loss(NEW, OLD, ADV, MASK, LossConfig(), weights=weights)
    expected = (per_token_expected() * weights * MASK).sum() / MASK.sum()
    assert out.loss.item() == pytest.approx(expected.item())


def test_clip_higher():
    out = policy_loss(NEW, OLD, ADV, MASK, LossConfig(epsilon=0.2, epsilon_high=0.6))  # 1.5 < 1.6: unclipped
    assert out.loss.item() == pytest.approx((-1 - 1.5 - 1 + 1.6 + 2) / 5)


def test_zero_weight_gives_zero_gradient():
    logprobs = NEW.clone().requires_grad_(True)
    weights = torch.ones(2, 3)
    weights[0, 1] = 0.0
    policy_loss(logprobs, OLD, ADV, MASK, LossConfig(beta=0.1), weights=weights, ref_logprobs=OLD).loss.backward()
    assert logprobs.grad[0, 1] == 0
    assert logprobs.grad[0, 0] != 0


def test_kl_k3_and_its_weighting():
    ref = torch.full((2, 3), -0.1)
    delta = ref - NEW
    kl = torch.exp(delta) - delta - 1
    weights = torch.full((2, 3), 2.0)
    base = policy_loss(NEW, OLD, ADV, MASK, LossConfig(), weights=weights).loss
    with_kl = policy_loss(NEW, OLD, ADV, MASK, LossConfig(beta=0.5), weights=weights, ref_logprobs=ref)
    unweighted_kl = policy_loss(
        NEW, OLD, ADV, MASK, LossConfig(beta=0.5, weight_kl=False), weights=weights, ref_logprobs=ref
    )
    kl_mean = (kl * MASK).sum() / MASK.sum()
    assert with_kl.loss.item() == pytest.approx((base + 0.5 * 2.0 * kl_mean).item())
    assert unweighted_kl.loss.item() == pytest.approx((base + 0.5 * kl_mean).item())
    assert with_kl.metrics["kl"] == pytest.approx(kl_mean.item())
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(NEW, OLD, ADV, MASK, LossConfig(beta=0.5))


def test_weight_positive_only_leaves_negative_advantage_sequences_uniform():
    weights = torch.full((2, 3), 3.0)
    out = policy_loss(NEW, OLD, ADV, MASK, LossConfig(weight_positive_only=True), weights=weights)
    expected = torch.tensor([[-3.0, -3.6, -3.0], [1.6, 2.0, 0.0]])
    assert out.loss.item() == pytest.approx((expected * MASK).sum().item() / 5)
