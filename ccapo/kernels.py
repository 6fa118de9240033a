"""Counterfactual attention over the shared base cache: each row's visibility as structure, not a tensor.

A pass's rows are packed into one sequence (`packing.py`). The engine switches a supported model's
attention implementation to `ROW_ATTENTION` around its counterfactual passes (`row_attention_for`)
and hands each chunk's `PassState` through the forward's kwargs, which transformers passes on to
the attention function unchanged. That function appends the chunk's keys and values to the shared
store's fed region (`store.py`) and attends over the store in place, by one of two kernels:

- "fused" (`block_mask.py`): one FlexAttention call per layer over the whole chunk, its
  `BlockMask` built once per pass from the rows' ranges; compiled where `COMPILED_DEVICES` says.
- "merge": per row segment, unmasked attentions over the key ranges it sees in full and a causal
  one over its own chunk, merged exactly by log-sum-exp (CPU: SDPA's flash kernel, which returns
  the log-sum-exp). Nothing of size queries x keys is built.

Both are exact. `DEVICE_KERNEL` holds the measured choice per device (docs/performance.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import AttentionInterface, PreTrainedModel

from ccapo.packing import Kernel, PassState, rotate

logger = logging.getLogger(__name__)

ROW_ATTENTION = "ccapo_rows"
STATE_KWARG = "ccapo_pass"
# The kernel each device type runs by default, as measured: on the CPU the merge path is faster than
# FlexAttention (compiled or not); elsewhere the fused call keeps a pass at one kernel per layer.
DEVICE_KERNEL: dict[str, Kernel] = {"cpu": "merge"}
FALLBACK_KERNEL: Kernel = "fused"
# Decoders whose attention is plain softmax attention over rotated keys (no sliding window, logit
# softcap or sink), so row attention computes exactly what their own kernels do.
PLAIN_ATTENTION = ("llama", "mistral", "qwen2", "qwen3")


def kernel_for(device: torch.device) -> Kernel:
    return DEVICE_KERNEL.get(device.type, FALLBACK_KERNEL)


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
    """transformers' attention-function contract: (1, H, Q, D) packed queries, (1, Hkv, Q, D) their
    keys and values -> (1, Q, H, D) outputs. Who sees what comes from kwargs[STATE_KWARG]."""
    state: PassState | None = kwargs.get(STATE_KWARG)
    if state is None or attention_mask is not None or dropout:
        raise RuntimeError("row attention needs a PassState, no mask and no dropout (the engine's passes only)")
    layer, store, c = module.layer_idx, state.store, state.chunk
    fed = store.fed_start
    keys, values = store.keys[layer], store.values[layer]
    keys[:, :, fed + c.c0 : fed + c.c1] = key  # the chunk's own keys, where its later queries find them
    values[:, :, fed + c.c0 : fed + c.c1] = value
    keys, values = keys[:, :, : fed + c.c1], values[:, :, : fed + c.c1]
    if state.kernel == "fused":
        from ccapo.block_mask import fused_attention  # FlexAttention is imported only where it runs

        out = fused_attention(query, keys, values, state, scaling)
    else:
        out = _merged(query, keys, values, state, scaling)
    return out.transpose(1, 2).contiguous(), None


def _merged(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, state: PassState, scale: float | None
) -> torch.Tensor:
    """The merge path: per row segment, one unmasked attention per key range it sees in full, one
    causal over its own queries' keys, merged by log-sum-exp."""
    c, plan = state.chunk, state.plan
    out = torch.empty_like(q)
    fed = plan.fed_start
    for piece in c.pieces:
        seg, p0, p1 = piece.segment, piece.p0 - c.c0, piece.p1 - c.c0
        base = plan.rows[piece.row].slot * plan.stride
        mine = fed + plan.offsets[piece.row]  # the row's first fed column
        qs = q[:, :, p0:p1]
        parts = [
            _attend(qs, keys[:, :, base + a : base + b], values[:, :, base + a : base + b], scale) for a, b in seg.base
        ]
        if seg.rotated is not None:
            assert state.cos is not None and state.sin is not None
            n = p1 - p0
            cos, sin = state.cos[:, :, piece.r0 : piece.r0 + n], state.sin[:, :, piece.r0 : piece.r0 + n]
            a, b = seg.rotated
            parts.append(
                _attend(rotate(qs, cos, sin), keys[:, :, base + a : base + b], values[:, :, base + a : base + b], scale)
            )
        if seg.fed_from < piece.s0:  # its own keys fed before this segment's queries in this chunk
            lo, hi = mine + seg.fed_from, mine + piece.s0
            parts.append(_attend(qs, keys[:, :, lo:hi], values[:, :, lo:hi], scale))
        lo, hi = fed + piece.p0, fed + piece.p1
        parts.append(_attend(qs, keys[:, :, lo:hi], values[:, :, lo:hi], scale, causal=True))
        out[:, :, p0:p1] = merge(parts)
    return out


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None, causal: bool = False
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Attention and its log-sum-exp per query (a causal call is a square); None over no keys."""
    if k.shape[2] == 0:
        return None
    if q.device.type == "cpu":  # grouped-query heads natively (torch >= 2.13)
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, is_causal=causal, scale=scale)
        return out, lse
    groups = q.shape[1] // k.shape[1]  # elsewhere the merge path is the fallback: plain math
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = (q.float() @ k.float().transpose(-1, -2)) * (scale if scale is not None else q.shape[-1] ** -0.5)
    if causal:
        n = q.shape[2]
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    lse = scores.logsumexp(-1)
    return ((scores - lse[..., None]).exp() @ v.float()).to(q.dtype), lse


def merge(parts: list[tuple[torch.Tensor, torch.Tensor] | None]) -> torch.Tensor:
    """Attentions of the same queries over disjoint key sets, as one attention over their union."""
    found = [p for p in parts if p is not None]
    if len(found) == 1:
        return found[0][0]
    top = torch.stack([lse for _, lse in found]).amax(0)
    weights = [(lse - top).exp()[..., None] for _, lse in found]
    total = sum(w * out for w, (out, _) in zip(weights, found, strict=True))
    return total / sum(weights)


AttentionInterface.register(ROW_ATTENTION, row_attention)
