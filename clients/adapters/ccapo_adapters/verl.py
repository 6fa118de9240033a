"""verl: counterfactual weights folded into the advantages before the actor update sees them.

verl's policy-loss functions (`register_policy_loss`) receive only old/new log-probs, advantages,
`response_mask` and `rollout_is_weights`, and custom advantage estimators (`register_adv_est`)
only rewards, the mask and group ids (verl 0.9): neither sees an extra batch key. So the weights
multiply the advantages once verl's own `compute_advantage` has run, on the driver where the batch
lives. Every verl policy loss that is linear in the per-token advantage (vanilla PPO clip, dual
clip, ...) then weights each token's loss, exactly as multiplying its per-token loss would (the
verl tests check this on verl's `compute_policy_loss_vanilla`).

Two batch layouts, the two trainers of verl 0.9:
- the v1 trainers (`verl.trainer.ppo.v1`, the default: `trainer.use_v1: true`) keep each row in
  TransferQueue as unpadded tensors: `weight_response_rows` works on those rows;
- the legacy `RayPPOTrainer` passes a padded `DataProto`: `fill_token_weights` stores the (B, T)
  weights as `batch["ccapo_weights"]` beside `response_mask`, `weight_advantages` applies them and
  drops the key, so it never travels to the workers.

Nothing here imports verl; `ccapo_adapters.verl_trainer` registers the trainers verl runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from ccapo_adapters.batch import apply_token_weights
from ccapo_adapters.provider import WeightProvider

WEIGHTS_KEY = "ccapo_weights"


class Batch(Protocol):
    """What the DataProto functions read of a `verl.DataProto`: its tensor batch."""

    batch: Any


def weight_response_rows(
    prompts: Sequence[torch.Tensor],
    responses: Sequence[torch.Tensor],
    response_masks: Sequence[torch.Tensor],
    advantages: Sequence[torch.Tensor],
    provider: WeightProvider,
    step: int | None = None,
) -> tuple[list[torch.Tensor], dict[str, float]]:
    """Weighted advantages for unpadded rows (verl v1's TransferQueue layout), and the weight metrics.

    Row i holds `prompts[i]` (P_i,), `responses[i]`, `response_masks[i]` and `advantages[i]` (T_i,).
    Every response token is scored, tool or environment output included (the ids the policy saw);
    only `response_mask` tokens are weighted, the rest keep their advantage.
    """
    lengths = [len(row) for row in responses]
    if [len(m) for m in response_masks] != lengths or [len(a) for a in advantages] != lengths:
        raise ValueError("responses, response_masks and advantages must have the same length in every row")
    batch = provider.weights([p.tolist() for p in prompts], [r.tolist() for r in responses])
    width = batch.weights.shape[1]
    mask = torch.zeros((len(lengths), width), dtype=torch.bool)
    for row, (length, row_mask) in enumerate(zip(lengths, response_masks, strict=True)):
        mask[row, :length] = row_mask.to(torch.bool).cpu()
    _check_signs(batch.weights)
    weighted = [
        apply_token_weights(adv[None], batch.weights[row : row + 1, :length], mask[row : row + 1, :length])[0]
        for row, (adv, length) in enumerate(zip(advantages, lengths, strict=True))
    ]
    return weighted, provider.metrics(batch, mask, step)


def fill_token_weights(data: Batch, provider: WeightProvider, step: int | None = None) -> dict[str, float]:
    """Score a padded DataProto's responses and store their (B, T) weights as `data.batch["ccapo_weights"]`.

    Reads verl's `prompts` (B, P, left-padded), `responses` (B, T, right-padded), `attention_mask`
    (B, P + T) and `response_mask` (B, T); returns metrics keyed "ccapo/...".
    """
    batch = data.batch
    prompts, responses = batch["prompts"], batch["responses"]
    width = prompts.shape[1]
    attention = batch["attention_mask"]
    weights = provider.weights(
        prompts, responses, prompt_mask=attention[:, :width], completion_mask=attention[:, width:]
    )
    batch[WEIGHTS_KEY] = weights.weights.to(responses.device)
    return provider.metrics(weights, batch["response_mask"].cpu(), step)


def weight_advantages(data: Batch) -> None:
    """`advantages` x `ccapo_weights` on `response_mask` tokens, in place; then drops `ccapo_weights`.

    Call after `compute_advantage`; the weights live in the advantages from here on, so the batch
    that goes to the workers carries nothing verl does not know.
    """
    batch = data.batch
    if WEIGHTS_KEY not in batch.keys():  # noqa: SIM118 (a TensorDict has no `in`)
        raise KeyError(f"the batch has no {WEIGHTS_KEY!r}: call fill_token_weights(batch, provider) first")
    weights = batch.pop(WEIGHTS_KEY)
    _check_signs(weights)
    batch["advantages"] = apply_token_weights(batch["advantages"], weights, batch["response_mask"])


def _check_signs(weights: torch.Tensor) -> None:
    if (weights < 0).any():
        raise ValueError("negative token weights would flip the clipped loss: keep the weight bounds at or above 0")
