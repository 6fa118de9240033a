"""One counterfactual pass over the shared store: its rows in, their answer log-probs out, on the device.

`row_pass` packs the rows into one sequence and feeds it (in chunks, where memory asks) through row
attention (`kernels.py`). `dense_pass` is the fallback for models row attention cannot run: rows
padded to one width, each gathering its prefix, under a dense additive mask. Neither reads anything
back from the device: the caller reads a group's log-probs once, after its last pass.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from ccapo.interventions import additive_mask, visibility
from ccapo.kernels import STATE_KWARG
from ccapo.packing import Kernel, PassRow, PassState, pack
from ccapo.store import KVStore


def row_pass(
    decoder: torch.nn.Module,
    head: torch.nn.Module,
    softcap: float | None,
    store: KVStore,
    rows: list[PassRow],
    kernel: Kernel,
    chunk: int,
) -> torch.Tensor:
    """The rows' answer log-probs (rows,) in float64 on the device; `chunk`: packed queries per forward.

    The model's attention must be row attention here (`kernels.row_attention_for`).
    """
    device = store.keys[0].device
    plan = pack(rows, store.stride, store.fed_start, chunk, device, blocks=kernel == "fused")
    cos = sin = None
    if any(row.rotated for row in rows):
        cos, sin = decoder.rotary_emb(store.keys[0], position_ids=plan.rot_shift[None])
        if cos.shape[-1] != store.keys[0].shape[-1]:
            raise ValueError(
                f"rotating queries needs rotary embeddings over the whole head ({store.keys[0].shape[-1]})"
            )
        cos, sin = cos[:, None].to(store.keys[0].dtype), sin[:, None].to(store.keys[0].dtype)
    states = []
    for c in plan.chunks:
        state = PassState(store, plan, c, kernel, cos, sin)
        ids, positions = plan.ids[:, c.c0 : c.c1], plan.positions[:, c.c0 : c.c1]
        out = decoder(input_ids=ids, position_ids=positions, use_cache=False, **{STATE_KWARG: state})
        states.append(out.last_hidden_state[0])
        del out, state
    hidden = torch.cat(states) if len(states) > 1 else states[0]
    return answer_logprobs(head, softcap, hidden, plan.answer_index, plan.answer_targets, plan.answer_row, len(rows))


def answer_logprobs(
    head: torch.nn.Module,
    softcap: float | None,
    hidden: torch.Tensor,
    index: torch.Tensor,
    targets: torch.Tensor,
    row: torch.Tensor,
    rows: int,
) -> torch.Tensor:
    """Sum of answer-token log-probs per row, (rows,) float64 on the device: `hidden[index[k]]`
    predicts `targets[k]`, which belongs to row `row[k]`. Only those states meet the LM head
    (`head`, its logits soft-capped at `softcap` where the model does so)."""
    logits = head(hidden[index]).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    token_lp = logits.gather(1, targets[:, None])[:, 0] - torch.logsumexp(logits, dim=-1)
    return torch.zeros(rows, dtype=torch.float64, device=hidden.device).index_add_(0, row, token_lp.double())


def dense_pass(
    decoder: torch.nn.Module,
    head: torch.nn.Module,
    softcap: float | None,
    store: KVStore,
    rows: list[PassRow],
    chunk: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """`row_pass` for any decoder: rows padded to one width gather their prefixes from the store and
    attend under a dense mask, fed `chunk` queries per row at a time."""
    device = store.keys[0].device
    n, width = len(rows), max(len(row.tokens) for row in rows)
    past = max(1, max(row.prefix for row in rows))
    tokens = [row.tokens + [0] * (width - len(row.tokens)) for row in rows]
    cols = [[row.slot * store.stride + (c if c < row.prefix else 0) for c in range(past)] for row in rows]
    bounds = [[row.prefix, len(row.tokens), *(row.hidden or (0, 0))] for row in rows]
    answers = [
        (r * width + len(row.tokens) - row.answer - 1 + k, row.tokens[len(row.tokens) - row.answer + k], r)
        for r, row in enumerate(rows)
        for k in range(row.answer)
    ]
    host = torch.tensor([x for xs in (*tokens, *cols, *bounds, *answers) for x in xs], dtype=torch.long)
    on = host.to(device, non_blocking=True)  # the pass's one host-to-device copy
    tokens_t, cols_t, bounds_t, answers_t = on.split([n * width, n * past, 4 * n, 3 * len(answers)])
    tokens_t, cols_t = tokens_t.view(n, width), cols_t.view(n, past)
    prefix, lengths, h0, h1 = bounds_t.view(n, 4).unbind(1)
    gathered = [
        (k[0][:, cols_t].transpose(0, 1), v[0][:, cols_t].transpose(0, 1))
        for k, v in zip(store.keys, store.values, strict=True)
    ]  # each row's prefix, copied: the fallback's cost
    cache = DynamicCache(ddp_cache_data=gathered)
    del gathered
    past_cols = torch.arange(past, device=device)[None].expand(n, past)
    past_valid = past_cols < prefix[:, None]
    states = []
    for start in range(0, width, chunk):
        end = min(width, start + chunk)
        new_cols = torch.arange(end, device=device)[None]
        key_pos = torch.cat([past_cols, prefix[:, None] + new_cols], dim=1)
        query_pos = key_pos[:, past + start :]
        key_valid = torch.cat([past_valid, new_cols < lengths[:, None]], dim=1)
        allowed = visibility(query_pos, key_pos, h0, h1) & key_valid[:, None, :]
        mask = additive_mask(allowed, dtype)
        del allowed
        ids = tokens_t[:, start:end]
        out = decoder(input_ids=ids, position_ids=query_pos, cache=cache, use_cache=True, attention_mask=mask)
        cache = out.cache
        states.append(out.last_hidden_state)
        del out, mask
    hidden = (torch.cat(states, dim=1) if len(states) > 1 else states[0]).flatten(0, 1)
    index, targets, row = answers_t.view(-1, 3).unbind(1)
    return answer_logprobs(head, softcap, hidden, index, targets, row, n)
