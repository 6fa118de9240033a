"""The update stage: `num_iterations` optimizer steps over the batch, in micro-batches whose losses
add up exactly to the full batch's (over every process's samples)."""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext

import torch

from ccapo_trainer.components import Components
from ccapo_trainer.loss import policy_loss
from ccapo_trainer.rollout import chunked, completion_logprobs
from ccapo_trainer.stages.batch import StepBatch

logger = logging.getLogger(__name__)


def update(run: Components, batch: StepBatch, weights: torch.Tensor) -> dict[str, float]:
    """Loss, backward and optimizer step(s); returns this process's share of the step's update metrics."""
    config = run.config
    device = run.accelerator.device
    prompts = batch.prompts
    ids, mask = batch.ids.to(device), batch.loss_mask.to(device)
    advantages, weights = batch.advantages.to(device), weights.to(device)
    n = ids.shape[0]
    batches = chunked(n, config.micro_batch_size)
    old = ref = None
    if config.num_iterations > 1 or config.beta:
        with torch.no_grad():
            if config.num_iterations > 1:
                old = torch.cat([_logprobs(run, run.model, prompts, ids, mask, mb)[0] for mb in batches])
            if config.beta:
                ref = torch.cat([_reference_logprobs(run, prompts, ids, mask, mb) for mb in batches])

    totals: dict[str, float] = {}
    # Shares of the global batch (every process's samples); DDP averages the processes' gradients,
    # so each process scales its loss by their count to get the global batch's gradient.
    tokens = max(run.processes.total(float(mask.sum())), 1.0)
    rows = run.processes.total(n)
    skipped = 0
    for iteration in range(config.num_iterations):
        for k, mb in enumerate(batches):
            sync = nullcontext() if k == len(batches) - 1 else run.accelerator.no_sync(run.model)
            with sync:
                logprobs, entropy = _logprobs(run, run.model, prompts, ids, mask, mb, with_entropy=iteration == 0)
                out = policy_loss(
                    logprobs,
                    logprobs.detach() if old is None else old[mb],
                    advantages[mb],
                    mask[mb],
                    config.loss,
                    weights[mb],
                    None if ref is None else ref[mb],
                )
                share = _share(config.loss_type, mask, mb, tokens, rows)
                run.accelerator.backward(out.loss * share * run.processes.count)
            if iteration == 0:
                _accumulate(totals, {"loss": float(out.loss.detach()), **out.metrics}, share)
                if entropy is not None:
                    mb_tokens = mask[mb].sum()
                    mean_entropy = float((entropy * mask[mb]).sum() / mb_tokens.clamp(min=1))
                    _accumulate(totals, {"entropy": mean_entropy}, float(mb_tokens / tokens))
        grad_norm = _optimizer_step(run)
        if grad_norm is None:
            skipped += 1
        elif iteration == 0:
            totals["grad_norm"] = grad_norm
    totals["update/skipped"] = skipped
    return totals


def _share(loss_type: str, mask: torch.Tensor, mb: slice, tokens: float, rows: float) -> float:
    """This micro-batch's share of the global batch loss, so the shares' sum is the full batch's loss."""
    if loss_type == "dapo":
        return float(mask[mb].sum() / tokens)
    return (mb.stop - mb.start) / rows


def _optimizer_step(run: Components) -> float | None:
    """Clip, step, zero; a non-finite gradient skips the step (counted) instead of poisoning the weights."""
    params = [p for p in run.model.parameters() if p.grad is not None]
    if run.config.max_grad_norm is not None:
        norm = run.accelerator.clip_grad_norm_(params, run.config.max_grad_norm)
    else:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    norm = float(norm)
    if not math.isfinite(norm):
        logger.warning("non-finite gradient norm; skipping this optimizer step")
        run.optimizer.zero_grad(set_to_none=True)
        return None
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return norm


def _logprobs(run: Components, model, prompts, ids, mask, mb: slice, with_entropy: bool = False):
    with run.accelerator.autocast():
        return completion_logprobs(
            model, prompts[mb], ids[mb], mask[mb], run.tokenizer.pad_token_id, run.config.temperature, with_entropy
        )


def _reference_logprobs(run: Components, prompts, ids, mask, mb: slice) -> torch.Tensor:
    """The frozen initial policy's log-probs: a LoRA run's base model with the adapter disabled."""
    if run.config.lora is not None:
        with run.policy.disable_adapter():
            return _logprobs(run, run.model, prompts, ids, mask, mb)[0]
    return _logprobs(run, run.reference, prompts, ids, mask, mb)[0]


def _accumulate(totals: dict[str, float], values: dict[str, float], share: float) -> None:
    for key, value in values.items():
        totals[key] = totals.get(key, 0.0) + value * share
