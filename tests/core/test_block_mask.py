"""The fused kernel's BlockMask against its own mask function: every visible (query, key) pair lies in
a tile the table lists. FlexAttention's unfused implementation (the CPU's) ignores the table, so
the engine-level tests cannot catch a missing tile; a compiled kernel (CUDA) would skip it. No
model, small tiles; well under a second."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention.flex_attention import create_mask

from ccapo import block_mask, packing
from ccapo.packing import PassRow, PassState, pack
from ccapo.store import KVStore

TILE = 16


def _rows() -> list[PassRow]:
    """Every layout: exact rows (whole, hidden span, first query inside the hidden span) and
    horizon rows (stale middle read as is, or through rotated queries), over three slots."""
    return [
        PassRow(0, 40, list(range(30)), list(range(40, 70)), 3, 30),
        PassRow(1, 12, list(range(50)), list(range(12, 62)), 4, 50, hidden=(5, 12)),
        PassRow(2, 59, list(range(5)), list(range(59, 64)), 4, 5, hidden=(50, 60)),
        PassRow(0, 20, list(range(14)), [*range(20, 26), *range(60, 68)], 3, 6, stale=(26, 60), shift=0),
        PassRow(1, 10, list(range(12)), [*range(10, 14), *range(50, 58)], 3, 4, stale=(19, 55), shift=5),
    ]


@pytest.mark.parametrize("chunk", [1000, 37])  # one chunk; chunks that split rows
def test_every_visible_pair_lies_in_a_listed_tile(monkeypatch, chunk):
    monkeypatch.setattr(packing, "BLOCK", TILE)
    monkeypatch.setattr(block_mask, "BLOCK", TILE)
    rows, stride, slots = _rows(), 70, 3
    total = sum(len(row.tokens) for row in rows)
    like = [(torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 1, 4))]
    store = KVStore.empty(like, slots, stride, total)
    plan = pack(rows, stride, store.fed_start, chunk, torch.device("cpu"), blocks=True)
    assert len(plan.chunks) == -(-total // chunk)
    for c in plan.chunks:
        keys = store.fed_start + c.c1
        state = PassState(store, plan, c, "fused", None, None)
        mask = block_mask._block_mask(state, keys)
        queries = c.c1 - c.c0 + c.rot1 - c.rot0
        dense = create_mask(mask.mask_mod, None, None, queries, keys, device="cpu")[0, 0]
        table = plan.tables[plan.chunks.index(c)]
        tiles = table.repeat_interleave(TILE, 0)[:queries].repeat_interleave(TILE, 1)[:, :keys]
        assert not (dense & ~tiles).any(), "a visible key outside every listed tile"
        assert dense.any(dim=1).all()  # every query sees at least itself, or (rotated) its stale keys
        assert not table.all()  # and the table is sparse: other slots' tiles are skipped
