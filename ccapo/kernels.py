"""Counterfactual attention without a dense mask: each row's visibility as structure, not a tensor.

A row the engine feeds sees a set of cached keys in full (its reused prefix, minus the hidden range
of an `attention` intervention, plus the chunks it fed before) and its own chunk causally. So its
attention is the merge of two unmasked attentions: the queries over the fully visible keys, and the
queries over their own chunk with a plain causal kernel (a square, where upper-left and lower-right
alignment agree). Merging by log-sum-exp is exact. Nothing of size queries x keys is built.

The engine switches a supported model's attention implementation to `ROW_ATTENTION` around its
passes (`row_attention_for`) and hands each pass's `RowGeometry` through the forward's kwargs,
which transformers passes on to the attention function unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right
from transformers import AttentionInterface, PreTrainedModel

from ccapo.interventions import visibility

logger = logging.getLogger(__name__)

ROW_ATTENTION = "ccapo_rows"
GEOMETRY_KWARG = "ccapo_rows"
# Decoders whose attention is plain softmax attention over rotated keys (no sliding window, logit
# softcap or sink), so row attention computes exactly what their own kernels do.
PLAIN_ATTENTION = ("llama", "mistral", "qwen2", "qwen3")
# Devices whose SDPA has no lower-right causal kernel (a CausalBias is materialized as a dense mask
# there) but whose flash kernel returns the log-sum-exp: rows merge two unmasked calls instead.
MERGE_DEVICES = ("cpu",)


@dataclass(frozen=True)
class Segment:
    """Queries [q0, q1) of a row: each sees the key columns in `full`, and the segment's own keys
    causally (query q0 + i sees columns own .. own + i)."""

    q0: int
    q1: int
    full: list[tuple[int, int]]
    own: int


@dataclass(frozen=True)
class RowGeometry:
    """What each row of one pass attends to, as column ranges of the pass's key tensor.

    `segments[r]`: row r's real queries in segments (a row the engine feeds has one; the horizon
    estimator's rows have two); queries after the last are padding, whose outputs are zeros and
    never read. `masks[r]`, where not None, is row r's own (queries, keys) visibility over all key
    columns instead: the one layout ranges cannot say, an `attention` row whose first query lies
    inside its hidden span (a span that ends where the answer starts), so that query sees the span
    and the later ones do not.
    """

    segments: list[list[Segment]]
    masks: list[torch.Tensor | None]


def row_attention_unsupported(model: PreTrainedModel) -> str | None:
    """Why row attention cannot stand in for this model's attention, or None when it can."""
    config = model.config.get_text_config()
    if config.model_type not in PLAIN_ATTENTION:
        return f"model type {config.model_type!r} is not one of {PLAIN_ATTENTION}"
    layers = getattr(config, "layer_types", None) or []
    if getattr(config, "use_sliding_window", False) or "sliding_attention" in layers:
        return "the model uses sliding-window attention"
    return None


@contextmanager
def row_attention_for(model: PreTrainedModel) -> Iterator[None]:
    """Run the model's attention through `row_attention` inside the block, then restore its own.

    Not thread-safe with other users of the same model object during the block (the engine owns the
    model while it scores).
    """
    config = model.config.get_text_config()
    own = config._attn_implementation
    config._attn_implementation = ROW_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = own


def row_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function contract: (B, H, Q, D) queries, (B, Hkv, K, D) keys and
    values -> (B, Q, H, D) outputs. The rows' visibility comes from kwargs[GEOMETRY_KWARG]."""
    geometry: RowGeometry | None = kwargs.get(GEOMETRY_KWARG)
    if geometry is None or attention_mask is not None or dropout:
        raise RuntimeError("row attention needs a RowGeometry, no mask and no dropout (the engine's passes only)")
    groups = query.shape[1] // key.shape[1]
    out = query.new_zeros(query.shape)
    for r, (segments, mask) in enumerate(zip(geometry.segments, geometry.masks, strict=True)):
        if mask is not None:
            n, k = mask.shape
            out[r : r + 1, :, :n] = F.scaled_dot_product_attention(
                query[r : r + 1, :, :n], key[r : r + 1, :, :k], value[r : r + 1, :, :k],
                attn_mask=mask, scale=scaling, enable_gqa=groups > 1,
            )  # fmt: skip
        for seg in segments:
            q, n = query[r : r + 1, :, seg.q0 : seg.q1], seg.q1 - seg.q0
            k_full, v_full = _columns(key[r : r + 1], seg.full), _columns(value[r : r + 1], seg.full)
            k_own, v_own = key[r : r + 1, :, seg.own : seg.own + n], value[r : r + 1, :, seg.own : seg.own + n]
            out[r : r + 1, :, seg.q0 : seg.q1] = _row(q, k_full, v_full, k_own, v_own, groups, scaling)
    return out.transpose(1, 2).contiguous(), None


def _columns(tensor: torch.Tensor, ranges: list[tuple[int, int]]) -> torch.Tensor:
    """The key columns in `ranges`, a view when there is one range."""
    parts = [tensor[:, :, a:b] for a, b in ranges if b > a]
    if len(parts) == 1:
        return parts[0]
    return torch.cat(parts, dim=2) if parts else tensor[:, :, :0]


def _row(
    q: torch.Tensor,
    k_full: torch.Tensor,
    v_full: torch.Tensor,
    k_own: torch.Tensor,
    v_own: torch.Tensor,
    groups: int,
    scale: float | None,
) -> torch.Tensor:
    """One row's attention: every query sees `k_full` and its own chunk causally."""
    if q.device.type not in MERGE_DEVICES:
        # CUDA: one lower-right causal call; SDPA sends it to its flash or memory-efficient kernel.
        k, v = torch.cat([k_full, k_own], dim=2), torch.cat([v_full, v_own], dim=2)
        bias = causal_lower_right(q.shape[2], k.shape[2])
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale, enable_gqa=groups > 1)
    # CPU: two unmasked flash calls (grouped-query heads natively, torch >= 2.13), merged exactly by
    # their log-sum-exps.
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    own, own_lse = flash(q, k_own, v_own, is_causal=True, scale=scale)
    if k_full.shape[2] == 0:
        return own
    seen, seen_lse = flash(q, k_full, v_full, scale=scale)
    top = torch.maximum(own_lse, seen_lse)
    w_own, w_seen = (own_lse - top).exp()[..., None], (seen_lse - top).exp()[..., None]
    return (own * w_own + seen * w_seen) / (w_own + w_seen)


def row_geometry(
    prefix: torch.Tensor,
    lengths: torch.Tensor,
    hidden: tuple[torch.Tensor, torch.Tensor],
    past: int,
    chunk: tuple[int, int],
    query_pos: torch.Tensor,
    key_pos: torch.Tensor,
    key_valid: torch.Tensor,
) -> RowGeometry:
    """The chunk [start, end) of rows fed at `prefix` (`lengths` tokens each, `hidden` key ranges) as
    row attention's column ranges, over keys laid out as `past` cached columns then the fed ones.
    The positions and validity are the dense mask's inputs, used only for a row ranges cannot say."""
    start, end = chunk
    segments: list[list[Segment]] = []
    masks: list[torch.Tensor | None] = []
    bounds = zip(prefix.tolist(), lengths.tolist(), hidden[0].tolist(), hidden[1].tolist(), strict=True)
    for r, (p, n, h0, h1) in enumerate(bounds):
        queries = max(0, min(end, n) - start)
        if h1 > p and queries:  # the first fed query lies inside the hidden span and still sees it
            allowed = visibility(query_pos[r : r + 1], key_pos[r : r + 1], hidden[0][r : r + 1], hidden[1][r : r + 1])
            masks.append((allowed & key_valid[r : r + 1, None, :])[0, :queries])
            segments.append([])
            continue
        cached = [(0, h0), (h1, p)] if h1 > h0 else [(0, p)]  # hidden keys left out: no fed query sees them
        masks.append(None)
        segments.append([Segment(0, queries, [*cached, (past, past + start)], past + start)] if queries else [])
    return RowGeometry(segments, masks)


AttentionInterface.register(ROW_ATTENTION, row_attention)
