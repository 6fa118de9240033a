"""verl: counterfactual weights carried in the batch next to `response_mask`, folded into the advantages.

verl's policy-loss functions (`register_policy_loss`) receive only old/new log-probs, advantages,
`response_mask` and `rollout_is_weights`, and custom advantage estimators (`register_adv_est`)
only rewards, the mask and group ids (verl 0.9): neither sees an extra batch key. So the weights
travel where verl already carries per-token values to the actor: `fill_token_weights` stores them
as `batch["ccapo_weights"]` (B, T) beside `response_mask`, and `weight_advantages` multiplies the
advantages by them once `compute_advantage` has run. Every verl policy loss that is linear in the
per-token advantage (vanilla PPO clip, dual clip, ...) then weights each token's loss, exactly as
multiplying its per-token loss would (`tests/integrations/test_verl.py` checks this on verl's
`compute_policy_loss_vanilla` when verl is importable).

Nothing here imports verl: the functions read `data.batch` of a `verl.DataProto` (or any object
with a `batch` mapping of verl's keys), so they run on the driver where the batch lives.
"""

from __future__ import annotations

from typing import Any, Protocol

from ccapo.batch_weights import apply_token_weights
from ccapo.integrations.provider import WeightProvider

WEIGHTS_KEY = "ccapo_weights"


class Batch(Protocol):
    """What the functions read of a `verl.DataProto`: its tensor batch."""

    batch: Any


def fill_token_weights(data: Batch, provider: WeightProvider, step: int | None = None) -> dict[str, float]:
    """Score the batch's responses and store their (B, T) weights as `data.batch["ccapo_weights"]`.

    Reads verl's `prompts` (B, P, left-padded), `responses` (B, T, right-padded), `attention_mask`
    (B, P + T) and `response_mask` (B, T). Every real response token is scored, tool or
    environment output included (the ids the policy saw); returns metrics keyed "ccapo/...".
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
    """`advantages` x `ccapo_weights` on `response_mask` tokens, in place; call after `compute_advantage`."""
    batch = data.batch
    if WEIGHTS_KEY not in batch:
        raise KeyError(f"the batch has no {WEIGHTS_KEY!r}: call fill_token_weights(batch, provider) first")
    if (batch[WEIGHTS_KEY] < 0).any():
        raise ValueError("negative token weights would flip the clipped loss: keep the weight bounds at or above 0")
    batch["advantages"] = apply_token_weights(batch["advantages"], batch[WEIGHTS_KEY], batch["response_mask"])


class CounterfactualActorUpdate:
    """Mix into verl's `RayPPOTrainer`: weights are filled and applied just before each actor update.

        class Trainer(CounterfactualActorUpdate, RayPPOTrainer): ...
        trainer = Trainer(...); trainer.weight_provider = WeightProvider.remote(config)

    At `_update_actor` the batch holds advantages (and, for the GRPO family, nothing later changes
    them), so the weights apply to every PPO epoch and mini-batch of the step. Weight metrics join
    the actor's metrics under "ccapo/...".
    """

    weight_provider: WeightProvider

    def _update_actor(self, batch: Any) -> Any:
        metrics = fill_token_weights(batch, self.weight_provider, step=getattr(self, "global_steps", None))
        weight_advantages(batch)
        output = super()._update_actor(batch)
        output.meta_info.setdefault("metrics", {}).update(metrics)
        return output
