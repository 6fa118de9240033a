"""The first-order estimator (`estimator="gradient"`): every span's drop from one forward and one backward pass.

S(x) is the sum of the answer tokens' log-probs. Each intervention moves the input along some
direction; the drop S(x) - S(x with span i intervened) is estimated by the first-order Taylor term
at the unmasked input, for all spans of a trace from the same gradient:

- pad: the span's input embeddings e_t move to the placeholder's e_p, so
  drop_i ~ sum over t in span i of (e_t - e_p) . dS/de_t.
- attention: a gate g_i scales how much every position after span i (query >= span end) attends to
  the span's keys, i.e. adds log g_i to those attention logits; g_i = 1 is the unmasked input and
  g_i -> 0 hides the span. drop_i ~ dS/dg_i at g = 1, which is the sum of dS/db over those (query,
  key) entries of an additive attention-mask bias b, passed to the decoder as a 4D float mask.
- delete: the same attention gate. Deleting a span hides it from every later position and shifts
  later positions left; the shift has no cheap first-order term and is left out, so "delete" and
  "attention" get the same estimates.

The base log-prob comes from the same forward pass and is exact; only the drops are estimates
(`JobScores.exact` is all False). Rows of a batch are independent, so one backward pass of the sum
of their S gives every row its own gradient. Gradients are taken with `torch.autograd.grad` with
respect to the embeddings or the mask only: a policy trained in the same process keeps its
parameters' `.grad` untouched.

The attention gate needs the attention probabilities of every layer for the backward pass: gated
batches close before they would keep more than `SAVED_ATTENTION_BYTES` of them, and a single job
that alone would has each decoder layer recomputed in the backward pass instead (one more
forward's work, a single layer's memory). The mask the gate builds
is a plain causal one: a model with sliding-window attention gets `GradientUnsupportedError` for
"attention"/"delete" when a sequence is longer than its window ("pad" needs no mask of its own).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

import torch
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel

from ccapo.interventions import additive_mask
from ccapo.jobs import Cancelled, EngineJob, JobScores, Progress

MAX_BATCH_TOKENS = 4096  # padded tokens per forward + backward pass
SAVED_ATTENTION_BYTES = 2 << 30  # attention probabilities kept for the backward pass before layers are recomputed


class GradientUnsupportedError(ValueError):
    """The gradient estimator cannot estimate these jobs on this model; the message says what to use instead."""


def gradient_scores(
    model: PreTrainedModel,
    jobs: Sequence[EngineJob],
    cancelled: Cancelled,
    progress: Progress | None = None,
    max_batch_tokens: int = MAX_BATCH_TOKENS,
) -> list[JobScores | None]:
    """Approximate scores for each job, aligned with `jobs`; job i's entry is None once `cancelled(i)` says so.

    `cancelled` is asked before every pass; `progress(done, total)` hears after every pass.
    """
    _check_attention_window(model, jobs)
    results: list[JobScores | None] = [None] * len(jobs)
    was_training = model.training
    model.eval()
    done = 0
    try:
        with torch.inference_mode(False), torch.enable_grad():
            for batch in _batches(model, jobs, max_batch_tokens):
                live = [i for i in batch if not cancelled(i)]
                if live:
                    scores = _score_batch(model, [jobs[i] for i in live])
                    for i, score in zip(live, scores, strict=True):
                        results[i] = None if cancelled(i) else score
                done += len(batch)
                if progress is not None:
                    progress(done, len(jobs))
    finally:
        model.train(was_training)
    return results


def _batches(model: PreTrainedModel, jobs: Sequence[EngineJob], budget: int) -> Iterator[list[int]]:
    """Job indices, pad jobs apart from gated ones, longest first, padded size within `budget` and
    a gated batch's saved attention within `SAVED_ATTENTION_BYTES`."""
    order = sorted(range(len(jobs)), key=lambda i: (jobs[i].intervention == "pad", -len(jobs[i].ids)))
    batch: list[int] = []
    for i in order:
        rows, width = len(batch) + 1, len(jobs[batch[0]].ids) if batch else 0
        if batch and (
            _gated(jobs[batch[0]]) != _gated(jobs[i])
            or rows * width > budget
            or (_gated(jobs[i]) and _saved_attention_bytes(model, rows, width) > SAVED_ATTENTION_BYTES)
        ):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def _gated(job: EngineJob) -> bool:
    return job.intervention != "pad"


def _score_batch(model: PreTrainedModel, jobs: list[EngineJob]) -> list[JobScores]:
    device = model.device
    lengths = [len(job.ids) for job in jobs]
    width = max(lengths)
    ids = torch.zeros((len(jobs), width), dtype=torch.long, device=device)
    for r, job in enumerate(jobs):
        ids[r, : len(job.ids)] = torch.tensor(job.ids, device=device)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
    gated = _gated(jobs[0])
    mask = None
    if gated:
        pos = torch.arange(width, device=device)
        valid = pos[None, None, :] < torch.tensor(lengths, device=device)[:, None, None]
        mask = additive_mask((pos[None, :, None] >= pos[None, None, :]) & valid, model.dtype).requires_grad_()
    else:
        embeds.requires_grad_()  # right padding under the model's own causal mask: no real position sees it

    decoder = model.get_decoder()
    recompute = gated and _saved_attention_bytes(model, len(jobs), width) > SAVED_ATTENTION_BYTES
    with _recomputed_layers(decoder) if recompute else nullcontext():
        hidden = decoder(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state
    answer = _answer_logprobs(model, hidden, jobs)
    target = mask if mask is not None else embeds
    (grad,) = torch.autograd.grad(answer.sum(), target)
    with torch.no_grad():
        placeholders = model.get_input_embeddings()(torch.tensor([job.placeholder for job in jobs], device=device))

    results = []
    for r, job in enumerate(jobs):
        if gated:
            # Row r's bias entries: queries from the span's end on, keys inside the span.
            drops = [grad[r, 0, end : lengths[r], start:end].double().sum().item() for start, end in job.spans]
        else:
            moved = (embeds[r].detach() - placeholders[r]).double() * grad[r].double()
            drops = [moved[start:end].sum().item() for start, end in job.spans]
        base = answer[r].item()
        results.append(JobScores(base, [base - d for d in drops], len(job.ids), [False] * len(job.spans)))
    return results


def _answer_logprobs(model: PreTrainedModel, hidden: torch.Tensor, jobs: list[EngineJob]) -> torch.Tensor:
    """Each row's sum of answer-token log-probs, differentiable; the LM head only where answer tokens are predicted."""
    device = hidden.device
    rows = torch.cat([torch.full((len(j.ids) - j.answer_start,), r, device=device) for r, j in enumerate(jobs)])
    positions = torch.cat([torch.arange(j.answer_start - 1, len(j.ids) - 1, device=device) for j in jobs])
    targets = torch.tensor([t for j in jobs for t in j.ids[j.answer_start :]], device=device)
    logits = model.get_output_embeddings()(hidden[rows, positions]).float()
    softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    token_lp = logits.gather(1, targets[:, None])[:, 0] - torch.logsumexp(logits, dim=-1)
    return torch.zeros(len(jobs), dtype=torch.float64, device=device).index_add(0, rows, token_lp.double())


def _saved_attention_bytes(model: PreTrainedModel, rows: int, width: int) -> int:
    config = model.config.get_text_config()
    per_layer = rows * config.num_attention_heads * width * width * model.dtype.itemsize
    return per_layer * config.num_hidden_layers


@contextmanager
def _recomputed_layers(decoder: torch.nn.Module) -> Iterator[None]:
    """Each decoder layer keeps only its inputs in the forward pass and recomputes itself in the backward."""
    layers = list(getattr(decoder, "layers", ()))
    own = [layer.__dict__.get("forward") for layer in layers]  # e.g. an accelerate hook's, put back after
    for layer in layers:
        layer.forward = functools.partial(checkpoint, layer.forward, use_reentrant=False)
    try:
        yield
    finally:
        for layer, forward in zip(layers, own, strict=True):
            if forward is None:
                del layer.forward
            else:
                layer.forward = forward


def _check_attention_window(model: PreTrainedModel, jobs: Sequence[EngineJob]) -> None:
    for job in jobs:
        if (reason := unsupported_reason(model, job)) is not None:
            raise GradientUnsupportedError(reason)


def unsupported_reason(model: PreTrainedModel, job: EngineJob) -> str | None:
    """Why this estimator cannot estimate `job` on `model` (None: it can). The gate's mask is plainly
    causal: right for sliding-window layers only within their window. `Scorer` asks when it prepares
    a trace, so a server refuses that trace alone instead of failing the batch it would share."""
    if not _gated(job):
        return None
    config = model.config.get_text_config()
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    slides = bool(window) and getattr(config, "use_sliding_window", True) is not False
    if layer_types is not None:
        slides = slides and "sliding_attention" in layer_types
    if not slides or len(job.ids) <= window:
        return None
    return (
        f"the gradient estimator builds its own causal attention mask for the attention and delete "
        f"interventions, which knows nothing of this model's {window}-token sliding window, and this sequence "
        f'has {len(job.ids)} tokens: use estimator="exact", or intervention="pad"'
    )
