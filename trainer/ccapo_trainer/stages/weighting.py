"""The weighting stage: counterfactual token weights for a step's batch, and keeping the scorer's
copy of the policy current.

Only rows whose weights the loss reads are scored (`unused_weight_rows`), and identical rows once
(the provider's `score_token_batch`); the others keep uniform weights, which is what the loss
would use for them anyway, so the update is the same as with every row scored.
"""

from __future__ import annotations

from typing import Any

import torch
from ccapo_adapters import BatchWeights
from ccapo_adapters.names import POLICY_LAG, policy_lag

from ccapo_trainer.components import Components
from ccapo_trainer.distributed import weight_metrics
from ccapo_trainer.loss import LossConfig
from ccapo_trainer.stages.batch import StepBatch
from ccapo_trainer.weighting import segment_only


def unused_weight_rows(advantages: torch.Tensor, loss: LossConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) bool masks of the rows whose token weights `policy_loss` never reads, by reason:
    (advantage <= 0 under `weight_positive_only`, advantage == 0).

    The weight multiplies the clipped term, which is exactly 0 where the advantage is, and the KL
    term only with `beta` > 0 and `weight_kl`; `weight_positive_only` replaces the weight of every
    row with advantage <= 0 by 1 before both terms.
    """
    none = torch.zeros_like(advantages, dtype=torch.bool)
    nonpositive = advantages <= 0 if loss.weight_positive_only else none
    kl_weighted = loss.beta != 0 and loss.weight_kl
    zero = none if kl_weighted else (advantages == 0) & ~nonpositive
    return nonpositive, zero


def token_weights(run: Components, batch: StepBatch) -> BatchWeights:
    """The batch's (B, T) weights from the run's provider; rows it does not score keep uniform weights."""
    nonpositive, zero = unused_weight_rows(batch.advantages, run.config.loss)
    with run.accelerator.autocast():  # bf16 on CUDA, like the update; a no-op on CPU
        weights = run.provider.weights(
            batch.prompts,
            batch.ids,
            completion_mask=batch.mask,
            reference_answers=batch.answers,
            skip=(nonpositive | zero).tolist(),
        )
        if run.segmenter is not None:
            segment_only(run.segmenter, weights, batch.prompts, batch.ids, batch.mask, batch.answers, run.config)
    return weights


def weighting_metrics(run: Components, weights: BatchWeights, batch: StepBatch, step: int) -> dict[str, Any]:
    """Weight statistics over every process's rows, the rows left unscored and why; with a server,
    how far its policy lags."""
    record = weight_metrics(run.processes, weights, batch.mask)
    skipped = [0, 0]
    if run.provider.scorer is not None:  # the uniform arm scores nothing, so it skips nothing
        skipped = [int(rows.sum()) for rows in unused_weight_rows(batch.advantages, run.config.loss)]
    nonpositive, zero = run.processes.values(skipped).sum(0).tolist()
    record["ccapo/weights/skipped_nonpositive"], record["ccapo/weights/skipped_zero_advantage"] = nonpositive, zero
    if run.provider.config.provider == "remote" and run.provider.config.scores:
        # Step `step`'s rollouts come from the policy after step - 1 updates. synced_step None: the first
        # push is still loading (a slow swap), so the server runs the model it started with.
        record[POLICY_LAG] = policy_lag(step - 1, run.provider.synced_step)
    return record


def sync_policy(run: Components, step: int, now: bool = False) -> None:
    """Push the policy to the scoring server (every `sync_every` steps, or `now`). The main process
    saves and sends it once for all; the others wait for it and take its synced step."""
    provider = run.provider
    if run.processes.is_main:
        if now:
            provider.sync(run.policy, run.tokenizer, step)
        else:
            provider.maybe_sync(run.policy, run.tokenizer, step)
    provider.synced_step = run.processes.from_main(provider.synced_step)
