"""The fused kernel: one FlexAttention call per layer for a whole chunk of a pass.

The chunk's queries (then the rotated copies of those that see stale keys sitting elsewhere,
`packing.py`) attend over the store's columns up to the chunk's last fed key. Who sees what is a
`BlockMask`: its tile table comes from the rows' ranges (`packing._block_table`, no queries x keys
tensor is ever built), its `mask_mod` from per-query and per-row tensors gathered once per pass.
Rotated copies are merged into their queries by log-sum-exp.

Compiled on `COMPILED_DEVICES`; elsewhere FlexAttention's unfused implementation runs the same
call (on the CPU, compiled FlexAttention has no log-sum-exp output and is slower than the merge
path, which is the CPU's default kernel).
"""

from __future__ import annotations

import warnings
from functools import cache

import torch
from torch.nn.attention.flex_attention import AuxRequest, BlockMask, flex_attention

from ccapo.packing import BLOCK, PassState, rotate

COMPILED_DEVICES = ("cuda",)


@cache
def _compiled():
    return torch.compile(flex_attention, dynamic=True)


def fused_attention(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, state: PassState, scale: float | None
) -> torch.Tensor:
    """(1, H, Q, D) chunk queries over (1, Hkv, K, D) store columns -> (1, H, Q, D)."""
    c, plan = state.chunk, state.plan
    n = c.c1 - c.c0
    if c.block_mask is None:
        c.block_mask = _block_mask(state, keys.shape[2])
    rotated = c.rot1 > c.rot0
    q = query
    if rotated:
        assert state.cos is not None and state.sin is not None
        at = plan.rot_index[c.rot0 : c.rot1] - c.c0
        turned = rotate(query[:, :, at], state.cos[:, :, c.rot0 : c.rot1], state.sin[:, :, c.rot0 : c.rot1])
        q = torch.cat([query, turned], dim=2)
    gqa = query.shape[1] != keys.shape[1]
    kwargs = {
        "block_mask": c.block_mask,
        "scale": scale,
        "enable_gqa": gqa,
        "return_aux": AuxRequest(lse=True) if rotated else None,
    }
    if query.device.type in COMPILED_DEVICES:
        result = _compiled()(q, keys, values, **kwargs)
    else:
        with warnings.catch_warnings():  # "called without torch.compile()": on purpose here
            warnings.simplefilter("ignore", UserWarning)
            result = flex_attention(q, keys, values, **kwargs)
    if not rotated:
        return result
    out, lse = result[0], result[1].lse
    own, own_lse = out[:, :, at], lse[:, :, at]
    top = torch.maximum(own_lse, lse[:, :, n:])
    w_own, w_turned = (own_lse - top).exp()[..., None], (lse[:, :, n:] - top).exp()[..., None]
    merged = (own * w_own + out[:, :, n:] * w_turned) / (w_own + w_turned)
    return out[:, :, :n].index_copy(2, at, merged.to(out.dtype))


def _block_mask(state: PassState, keys: int) -> BlockMask:
    c, plan = state.chunk, state.plan
    total = plan.per_query.shape[1] - plan.rot_index.shape[0]  # the pass's packed queries
    which = torch.cat([plan.per_query[:, c.c0 : c.c1], plan.per_query[:, total + c.rot0 : total + c.rot1]], dim=1)
    q_row, q_local, q_pos = which.unbind(0)
    rot = torch.arange(which.shape[1], device=which.device) >= c.c1 - c.c0
    base, prefix, a, b, shift, window, h0, h1, fed = plan.per_row.unbind(0)
    fed_start, fed_pos = plan.fed_start, plan.positions[0]

    def mask_mod(batch, head, qi, ki):
        r, qp, i, turned = q_row[qi], q_pos[qi], q_local[qi], rot[qi]
        col = ki - base[r]
        in_prefix = (col >= 0) & (col < prefix[r])
        in_stale = (col >= a[r]) & (col < b[r]) & (i >= window[r])
        seen_base = torch.where(turned, in_stale, in_prefix | (in_stale & (shift[r] == 0)))
        local = ki - fed[r]
        seen_fed = (ki >= fed_start) & (local >= 0) & (local <= i) & ~turned
        key_pos = torch.where(
            ki >= fed_start, fed_pos[(ki - fed_start).clamp(0, fed_pos.shape[0] - 1)],
            torch.where(in_prefix, col, col - shift[r]),
        )  # fmt: skip
        hidden = (key_pos >= h0[r]) & (key_pos < h1[r]) & (qp >= h1[r])
        return (seen_base | seen_fed) & ~hidden

    table = plan.tables[plan.chunks.index(c)]
    counts = table.sum(-1, dtype=torch.int32)
    order = torch.argsort(table.to(torch.int8), dim=-1, descending=True, stable=True).to(torch.int32)
    return BlockMask.from_kv_blocks(
        counts[None, None], order[None, None], BLOCK_SIZE=BLOCK, mask_mod=mask_mod,
        seq_lengths=(which.shape[1], keys), compute_q_blocks=False,
    )  # fmt: skip
