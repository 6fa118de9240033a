"""The weighting stage: counterfactual token weights for a step's batch, and keeping the scorer's
copy of the policy current."""

from __future__ import annotations

from typing import Any

from ccapo_adapters import BatchWeights

from ccapo_trainer.components import Components
from ccapo_trainer.distributed import weight_metrics
from ccapo_trainer.stages.batch import StepBatch
from ccapo_trainer.weighting import segment_only


def token_weights(run: Components, batch: StepBatch) -> BatchWeights:
    """The batch's (B, T) weights from the run's provider; rows it cannot score keep uniform weights."""
    with run.accelerator.autocast():  # bf16 on CUDA, like the update; a no-op on CPU
        weights = run.provider.weights(
            batch.prompts, batch.ids, completion_mask=batch.mask, reference_answers=batch.answers
        )
        if run.segmenter is not None:
            segment_only(run.segmenter, weights, batch.prompts, batch.ids, batch.mask, batch.answers, run.config)
    return weights


def weighting_metrics(run: Components, weights: BatchWeights, batch: StepBatch, step: int) -> dict[str, Any]:
    """Weight statistics over every process's rows; with a server, how far its policy lags."""
    record = weight_metrics(run.processes, weights, batch.mask)
    if run.provider.config.provider == "remote" and run.provider.config.scores:  # rollouts: policy after step - 1
        record["weighting/version_lag"] = float(step - 1 - run.provider.synced_step)
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
