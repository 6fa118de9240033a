"""The token-level clipped policy-gradient loss, with counterfactual importance weights.

docs/method.md, "Step by step", step 7: per token, l = -min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A),
plus beta * KL (the k3 estimator against a frozen reference), times the token's weight. Names
follow TRL's conventions (`loss_type`, `epsilon`, `epsilon_high`, `beta`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

LossType = Literal["dapo", "grpo", "dr_grpo"]


@dataclass(frozen=True)
class LossConfig:
    loss_type: LossType = "dapo"
    epsilon: float = 0.2
    epsilon_high: float | None = None  # DAPO's clip-higher; None: the same as epsilon
    beta: float = 0.0  # KL coefficient; 0 skips the reference model entirely
    weight_kl: bool = True  # the paper's reference implementation scales the KL term too
    weight_positive_only: bool = False  # weight only sequences with a positive advantage
    max_completion_length: int | None = None  # "dr_grpo" divides by this (default: the batch's T)


@dataclass(frozen=True)
class LossOutput:
    loss: torch.Tensor
    metrics: dict[str, float]


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    config: LossConfig,
    weights: torch.Tensor | None = None,
    ref_logprobs: torch.Tensor | None = None,
) -> LossOutput:
    """The loss of one batch of completions.

    Shapes: `logprobs`, `old_logprobs`, `mask`, `weights`, `ref_logprobs` are (B, T) over completion
    tokens; `advantages` is (B,) (one per sequence) or (B, T). `mask` is 1 on real tokens.
    Aggregation by `loss_type`: "dapo" sums over every token of the batch and divides by their
    count; "grpo" averages each sequence over its tokens, then the sequences; "dr_grpo" sums and
    divides by B x max_completion_length.
    """
    mask = mask.to(logprobs.dtype)
    adv = advantages[:, None] if advantages.dim() == 1 else advantages
    ratio = torch.exp(logprobs - old_logprobs)
    low, high = config.epsilon, config.epsilon if config.epsilon_high is None else config.epsilon_high
    clipped = torch.clamp(ratio, 1 - low, 1 + high)
    per_token = -torch.minimum(ratio * adv, clipped * adv)

    if weights is not None and config.weight_positive_only:
        weights = torch.where(adv > 0, weights, torch.ones_like(weights))
    kl = None
    if config.beta != 0:
        if ref_logprobs is None:
            raise ValueError("beta != 0 needs ref_logprobs from the frozen reference model")
        delta = ref_logprobs - logprobs
        kl = torch.exp(delta) - delta - 1  # k3: unbiased, always >= 0
    if weights is not None:
        per_token = per_token * weights
    if kl is not None:
        per_token = per_token + config.beta * (kl * weights if weights is not None and config.weight_kl else kl)

    loss = _aggregate(per_token, mask, config)
    with torch.no_grad():
        metrics = _clip_metrics(ratio, adv, mask, low, high)
        if kl is not None:
            metrics["kl"] = float((kl * mask).sum() / mask.sum().clamp(min=1))
    return LossOutput(loss, metrics)


def _clip_metrics(
    ratio: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, low: float, high: float
) -> dict[str, float]:
    """Shares of tokens whose ratio was clipped, under TRL's metric names."""
    tokens = mask.sum().clamp(min=1)
    below = ((ratio < 1 - low) & (adv < 0)).to(mask.dtype) * mask
    above = ((ratio > 1 + high) & (adv > 0)).to(mask.dtype) * mask
    return {
        "clip_ratio/low_mean": float(below.sum() / tokens),
        "clip_ratio/high_mean": float(above.sum() / tokens),
        "clip_ratio/region_mean": float((below + above).sum() / tokens),
    }


def _aggregate(per_token: torch.Tensor, mask: torch.Tensor, config: LossConfig) -> torch.Tensor:
    if config.loss_type == "dapo":
        return (per_token * mask).sum() / mask.sum().clamp(min=1)
    if config.loss_type == "grpo":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    if config.loss_type == "dr_grpo":
        length = config.max_completion_length or per_token.shape[-1]
        return (per_token * mask).sum() / (per_token.shape[0] * length)
    raise ValueError(f"unknown loss_type {config.loss_type!r}: use 'dapo', 'grpo' or 'dr_grpo'")
