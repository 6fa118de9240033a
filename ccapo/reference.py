"""The naive reference engine: every counterfactual is a full, independent forward pass.

This is the paper-style baseline and the ground truth the fast engine is tested against: batch size
1, the whole prompt + completion recomputed for each masked span, logits and a full-vocabulary
log-softmax at every position. Keep it simple and obviously right; never optimize it.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from ccapo.interventions import additive_mask, counterfactual, visibility
from ccapo.jobs import EngineJob, JobScores


@torch.inference_mode()
def answer_logprob(model: PreTrainedModel, ids: list[int], answer_start: int, hidden: tuple[int, int] | None) -> float:
    """Sum of log p(answer token | everything before it), teacher-forced."""
    device = model.device
    input_ids = torch.tensor([ids], device=device)
    mask = None
    if hidden is not None:
        pos = torch.arange(len(ids), device=device)[None]
        bounds = torch.tensor([hidden[0]], device=device), torch.tensor([hidden[1]], device=device)
        mask = additive_mask(visibility(pos, pos, *bounds), model.dtype)
    logits = model(input_ids=input_ids, attention_mask=mask).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    targets = input_ids[0, answer_start:]
    return logprobs[answer_start - 1 : len(ids) - 1].gather(1, targets[:, None]).sum().item()


def reference_score(model: PreTrainedModel, jobs: list[EngineJob]) -> list[JobScores]:
    """The same contract as `Engine.score`, computed the slow, obvious way."""
    model.eval()
    results = []
    for job in jobs:
        base = answer_logprob(model, job.ids, job.answer_start, None)
        masked = []
        for span in job.spans:
            cf = counterfactual(job.ids, job.answer_start, span, job.intervention, job.placeholder)
            masked.append(answer_logprob(model, cf.ids, cf.answer_start, cf.hidden))
        results.append(JobScores(base, masked))
    return results
