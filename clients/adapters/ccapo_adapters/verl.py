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

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from ccapo_adapters.batch import apply_token_weights
from ccapo_adapters.provider import WeightProvider

logger = logging.getLogger(__name__)

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
    padding: Sequence[bool] | None = None,
) -> tuple[list[torch.Tensor], dict[str, float]]:
    """Weighted advantages for unpadded rows (verl v1's TransferQueue layout), and the weight metrics.

    Row i holds `prompts[i]` (P_i,), `responses[i]`, `response_masks[i]` and `advantages[i]` (T_i,).
    Every response token is scored, tool or environment output included (the ids the policy saw);
    only `response_mask` tokens are weighted, the rest keep their advantage. Rows flagged in
    `padding` (the synthetic rows verl's `upsample_batch_to_divisible_size` adds, tag `is_padding`)
    are neither scored nor counted in the metrics, and keep their advantages.
    """
    lengths = [len(row) for row in responses]
    if [len(m) for m in response_masks] != lengths or [len(a) for a in advantages] != lengths:
        raise ValueError("responses, response_masks and advantages must have the same length in every row")
    padding = [False] * len(lengths) if padding is None else [bool(flag) for flag in padding]
    if len(padding) != len(lengths):
        raise ValueError(f"{len(padding)} padding flags for {len(lengths)} rows: give one per row")
    real = [row for row, flag in enumerate(padding) if not flag]
    weighted = list(advantages)
    if not real:
        return weighted, {}
    batch = provider.weights([prompts[r].tolist() for r in real], [responses[r].tolist() for r in real])
    mask = torch.zeros_like(batch.weights, dtype=torch.bool)
    for index, row in enumerate(real):
        mask[index, : lengths[row]] = response_masks[row].to(torch.bool).cpu()
    batch.weights = _uniform_where_negative(batch.weights, mask)
    for index, row in enumerate(real):
        length = lengths[row]
        weights, row_mask = batch.weights[index : index + 1, :length], mask[index : index + 1, :length]
        weighted[row] = apply_token_weights(advantages[row][None], weights, row_mask)[0]
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
    weights = _uniform_where_negative(batch.pop(WEIGHTS_KEY), batch["response_mask"])
    batch["advantages"] = apply_token_weights(batch["advantages"], weights, batch["response_mask"])


def _uniform_where_negative(weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`weights` with every row that holds a negative weight on a `mask` token made uniform, and a warning.

    A negative weight would flip the sign of that token's clipped loss; like any scoring failure,
    it costs its row the weighting, never the training step.
    """
    bad = ((weights < 0) & mask.to(device=weights.device, dtype=torch.bool)).any(dim=1)
    if not bad.any():
        return weights
    logger.warning(
        "%d of %d rows got negative token weights, which would flip their clipped loss: they keep uniform "
        "weights (keep the weight scheme's bounds at or above 0)",
        int(bad.sum()),
        len(bad),
    )
    return torch.where(bad[:, None], torch.ones_like(weights), weights)
