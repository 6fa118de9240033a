"""OpenRLHF: per-token multipliers for the advantages its experience maker computes.

An OpenRLHF `Experience` holds `sequences` (B, S): prompt and response ids in one row, right-padded;
`attention_mask` (B, S); and `action_mask` (B, S - 1), where action position j is the token at
sequence position j + 1 (log-probs are shifted by one). Multi-turn rollouts mark several action
ranges with observation tokens between them. `experience_weights` scores each row from its first
to its last action token (observations included: the ids the policy saw) and returns weights on
the action grid; `weight_experience` multiplies `experience.advantages` by them. OpenRLHF's
`PolicyLoss` (PPO clip, dual clip) is linear in the per-token advantage, so this weights each
token's loss. Recipe, in docs/integrations.md:

    class CounterfactualExperienceMaker(RemoteExperienceMaker):
        def compute_advantages_and_returns(self, experiences):
            experiences = super().compute_advantages_and_returns(experiences)
            for experience in experiences:
                weight_experience(experience, self.weight_provider)
            return experiences

Nothing here imports OpenRLHF (it needs CUDA-only flash-attn to import at all).
"""

from __future__ import annotations

from typing import Any

import torch

from ccapo_adapters.batch import BatchWeights, apply_token_weights
from ccapo_adapters.provider import WeightProvider


def experience_weights(
    sequences: torch.Tensor, attention_mask: torch.Tensor, action_mask: torch.Tensor, provider: WeightProvider
) -> BatchWeights:
    """(B, S - 1) weights on OpenRLHF's action grid (1.0 off the actions and on rows without any)."""
    if action_mask.shape != (sequences.shape[0], sequences.shape[1] - 1):
        raise ValueError(
            f"action_mask {tuple(action_mask.shape)} must be (B, S - 1) for sequences {tuple(sequences.shape)}"
        )
    actions = action_mask.to(torch.bool).cpu()
    real = attention_mask.to(torch.bool).cpu()
    positions = torch.arange(actions.shape[1])
    prompts, scored = [], torch.zeros_like(actions)
    for row, mask in enumerate(actions):
        taken = positions[mask]
        if taken.numel() == 0:  # nothing to weight; an empty completion is left uniform by the scorer
            prompts.append(sequences[row][real[row]].tolist())
            continue
        first, last = int(taken[0]), int(taken[-1])
        prompts.append(sequences[row, : first + 1][real[row, : first + 1]].tolist())
        scored[row, first : last + 1] = real[row, first + 1 : last + 2]
    return provider.weights(prompts, sequences[:, 1:], completion_mask=scored)


def weight_experience(experience: Any, provider: WeightProvider, step: int | None = None) -> dict[str, float]:
    """Multiply `experience.advantages` (B, S - 1) by counterfactual weights on its action tokens.

    Per-sample weight means go to `experience.info["ccapo_weight_mean"]` (OpenRLHF logs `info`
    per sample); the batch's statistics are returned, keyed "ccapo/...".
    """
    batch = experience_weights(experience.sequences, experience.attention_mask, experience.action_mask, provider)
    if (batch.weights < 0).any():
        raise ValueError("negative token weights would flip the clipped loss: keep the weight bounds at or above 0")
    mask = experience.action_mask
    experience.advantages = apply_token_weights(experience.advantages, batch.weights, mask)
    actions = mask.to(torch.float32).cpu()
    row_means = (batch.weights * actions).sum(-1) / actions.sum(-1).clamp(min=1)
    experience.info["ccapo_weight_mean"] = row_means.to(experience.advantages.device)
    return provider.metrics(batch, mask.cpu(), step)
