"""Windowed recomputation (`estimator="horizon"`): per span, recompute only what is near it and the answer.

The exact engine recomputes every suffix token of a counterfactual. Here a row recomputes the span
itself (pad), the `horizon_window` tokens after it, the `horizon_tail` tokens before the answer, and
the answer (from the state that predicts its first token); every other suffix token keeps its key
and value from the base pass. A later token's text does not change under the intervention, so most
of a span's effect reaches the answer through that text, which stays; what the stale keys and values
miss is the span's effect on their hidden states. Recomputed, the tail sees the intervention
directly; on long traces it narrows that miss only in bulk (docs/long-reasoning.md). For
`delete` the reused keys sit `span length` positions later than in the counterfactual: they are
rotated back by that many positions (RoPE rotations compose exactly), only their content is stale.
For `attention` nothing moves: the span stays cached and the recomputed queries do not see it. A
row with nothing stale (a span within the window of the answer) is exact.

Then `horizon_verify` spans per trace, those with the largest |estimated drop|, get exact drops: their
whole suffixes are recomputed over the same base pass, and only they and the rows with nothing
stale carry `exact: True`.

Rows run through row attention (`kernels.py`) in two segments: the window part sees the cached
prefix and itself causally; the tail and answer part also sees the stale middle and the whole window.
Supported: every intervention, on models row attention supports (`row_attention_unsupported`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache, PreTrainedModel

from ccapo.engine import answer_logprobs
from ccapo.interventions import WindowedBranch, windowed_branch
from ccapo.jobs import Cancelled, EngineJob, JobScores, Progress
from ccapo.kernels import GEOMETRY_KWARG, RowGeometry, Segment, row_attention_for, row_attention_unsupported
from ccapo.memory import MEMORY_SHARE, TokenCosts, available_memory

# Fed tokens per pass: rows are short (window + answer), so several share one.
BATCH_TOKENS = 4096


def horizon_unsupported(model: PreTrainedModel) -> str | None:
    """Why the horizon estimator cannot score on this model, or None when it can."""
    return row_attention_unsupported(model)


def horizon_scores(
    model: PreTrainedModel,
    jobs: Sequence[EngineJob],
    cancelled: Cancelled,
    progress: Progress | None = None,
) -> list[JobScores | None]:
    """Every job's drops by windowed recomputation, then its `horizon_verify` largest made exact."""
    was_training = model.training
    model.eval()
    results: list[JobScores | None] = []
    try:
        with torch.inference_mode():
            for i, job in enumerate(jobs):
                results.append(None if cancelled(i) else _estimate(model, job))
                if progress is not None:
                    progress(i + 1, len(jobs))
    finally:
        model.train(was_training)
    return results


def _estimate(model: PreTrainedModel, job: EngineJob) -> JobScores:
    """One base pass, its keys and values shared by the windowed rows and then by the verified spans'
    whole suffixes (a window past the answer leaves nothing stale: the exact row)."""
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    ids = torch.tensor([job.ids], device=model.device)
    out = decoder(input_ids=ids, use_cache=True)  # the model's own causal kernel
    answer = job.ids[job.answer_start :]
    base = answer_logprobs(head, softcap, out.last_hidden_state, [(0, job.answer_start, answer)])[0]
    cache = [(layer.keys, layer.values) for layer in out.cache.layers]
    del out
    kv = TokenCosts.of(model).kv
    max_rows = max(1, int(MEMORY_SHARE * available_memory(model.device)) // 2 // (len(job.ids) * kv))

    def logprobs(rows: list[WindowedBranch]) -> list[float]:
        found = []
        with row_attention_for(model):
            for batch in _batches(rows, max_rows):
                hidden = _row_pass(decoder, cache, batch)
                starts = [(r, len(row.tokens) - len(answer), answer) for r, row in enumerate(batch)]
                found += answer_logprobs(head, softcap, hidden, starts)
        return found

    rows = job.windowed_branches()
    masked, exact = logprobs(rows), [row.exact for row in rows]
    fed = len(job.ids) + sum(len(row.tokens) for row in rows)
    estimated = sorted(((abs(base - m), k) for k, m in enumerate(masked) if not exact[k]), reverse=True)
    picks = [k for _, k in estimated[: job.horizon_verify]]
    knobs = (job.intervention, job.placeholder, len(job.ids))  # a window past the answer: the exact row
    whole = [windowed_branch(job.ids, job.answer_start, job.spans[k], *knobs) for k in picks]
    for k, value in zip(picks, logprobs(whole), strict=True):
        masked[k], exact[k] = value, True
    return JobScores(base, masked, fed + sum(len(row.tokens) for row in whole), exact)


def _batches(rows: list[WindowedBranch], max_rows: int) -> list[list[WindowedBranch]]:
    batches: list[list[WindowedBranch]] = []
    for row in rows:
        batch = batches[-1] if batches else []
        width = max([len(row.tokens), *(len(r.tokens) for r in batch)])
        if not batch or len(batch) == max_rows or (len(batch) + 1) * width > BATCH_TOKENS:
            batches.append([])
        batches[-1].append(row)
    return batches


def _row_pass(
    decoder: torch.nn.Module, cache: list[tuple[torch.Tensor, torch.Tensor]], rows: list[WindowedBranch]
) -> torch.Tensor:
    """The rows' last hidden states: each over the base pass's prefix, its stale middle and itself."""
    device = cache[0][0].device
    n = len(rows)
    past = max(row.prefix + row.stale[1] - row.stale[0] for row in rows)
    width = max(len(row.tokens) for row in rows)
    tokens = torch.zeros((n, width), dtype=torch.long, device=device)
    positions = torch.zeros((n, width), dtype=torch.long, device=device)
    for r, row in enumerate(rows):
        tokens[r, : len(row.tokens)] = torch.tensor(row.tokens, device=device)
        positions[r, : len(row.tokens)] = torch.tensor(row.positions, device=device)
    rotations = [_rotation(decoder, cache[0][0], -row.shift) for row in rows]
    layers = []
    for keys, values in cache:
        k = keys.new_zeros((n, keys.shape[1], past, keys.shape[3]))
        v = values.new_zeros((n, values.shape[1], past, values.shape[3]))
        for r, row in enumerate(rows):
            (a, b), stale = row.stale, row.prefix + row.stale[1] - row.stale[0]
            k[r, :, : row.prefix], v[r, :, : row.prefix] = keys[0, :, : row.prefix], values[0, :, : row.prefix]
            k[r, :, row.prefix : stale] = _rotate(keys[0, :, a:b], *rotations[r])
            v[r, :, row.prefix : stale] = values[0, :, a:b]
        layers.append((k, v))
    geometry = RowGeometry([_segments(row, past) for row in rows], [None] * n)
    kwargs = {"cache": DynamicCache(ddp_cache_data=layers), GEOMETRY_KWARG: geometry}
    return decoder(input_ids=tokens, position_ids=positions, **kwargs).last_hidden_state


def _segments(row: WindowedBranch, past: int) -> list[Segment]:
    """The window sees the cached prefix; the answer part also the stale middle and the window. Under
    `attention` neither sees the hidden span, except a first answer query that lies inside it."""
    stale = row.prefix + row.stale[1] - row.stale[0]
    h0, h1 = row.hidden or (0, 0)

    def seen(end: int) -> list[tuple[int, int]]:  # cached columns [0, end) less the hidden span
        return [(0, h0), (h1, end)] if h1 > h0 else [(0, end)]

    window = [Segment(0, row.window, seen(row.prefix), past)] if row.window else []
    if h1 > row.prefix:  # the span ends where the answer starts: its last token is the first query
        first = Segment(0, 1, [(0, row.prefix)], past)
        return [first, Segment(1, len(row.tokens), seen(row.prefix), past + 1)]
    return [*window, Segment(row.window, len(row.tokens), [*seen(stale), (past, past + row.window)], past + row.window)]


def _rotation(decoder: torch.nn.Module, like: torch.Tensor, by: int) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE's cos and sin for a move of `by` positions, shaped to multiply (heads, positions, dim) keys."""
    cos, sin = decoder.rotary_emb(like, position_ids=torch.tensor([[by]], device=like.device))
    if cos.shape[-1] != like.shape[-1]:
        raise ValueError(f"the horizon estimator needs rotary embeddings over the whole head ({like.shape[-1]})")
    return cos[0].to(like.dtype), sin[0].to(like.dtype)


def _rotate(keys: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = keys.shape[-1] // 2
    turned = torch.cat([-keys[..., half:], keys[..., :half]], dim=-1)
    return keys * cos + turned * sin
