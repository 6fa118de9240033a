"""A counterfactual pass's rows packed into one sequence, and who sees what, built once per pass.

Every row of a pass reads the keys and values of its trace's base pass where they lie in the shared
store (`store.py`), and appends its own fed keys to the store's fed region at its packed offset, so
the fed region is laid out as the packed queries are. A row is described in Python integers the
engine already has (`PassRow`); `pack` turns a pass's rows into the device tensors both attention
kernels read (`kernels.py`: the merge path walks the rows' segments, the fused path hands a
FlexAttention `BlockMask` over the same layout to one call), with one host-to-device copy.

A query of row r at position `qp` (local index i) sees:
- base column c < prefix, and stale columns a <= c < b from its first late query (i >= window) on:
  those sit `shift` positions later than in the counterfactual (`delete`), so a rotated copy of
  the query sees them instead, merged by log-sum-exp;
- its own fed keys l <= i;
- never a key at a position in the hidden span [h0, h1) once qp >= h1 (`attention`).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Literal

import torch

from ccapo.interventions import Branch, WindowedBranch
from ccapo.store import KVStore

Kernel = Literal["merge", "fused"]  # row attention's two kernels (`kernels.py`)
# FlexAttention's tile: the block structure says which (query tile, key tile) pairs hold a visible key.
BLOCK = 128


@dataclass(frozen=True)
class PassRow:
    """One counterfactual row: fed `tokens` at `positions`, over its trace's base pass in store `slot`.

    The last `answer` tokens are the answer. Queries [0, window) see the base prefix and the row's
    earlier tokens; later ones also the stale base columns [stale[0], stale[1]) (the horizon
    estimator's reused middle), whose keys sit `shift` positions later than the row's own.
    """

    slot: int
    prefix: int
    tokens: list[int]
    positions: list[int]
    answer: int
    window: int
    stale: tuple[int, int] = (0, 0)
    shift: int = 0
    hidden: tuple[int, int] | None = None

    @classmethod
    def exact(cls, slot: int, b: Branch, answer: int) -> PassRow:
        n = len(b.tokens)
        return cls(
            slot, b.prefix_len, b.tokens, list(range(b.prefix_len, b.prefix_len + n)), answer, n, hidden=b.hidden
        )

    @classmethod
    def windowed(cls, slot: int, b: WindowedBranch, answer: int) -> PassRow:
        return cls(slot, b.prefix, b.tokens, b.positions, answer, b.window, b.stale, b.shift, b.hidden)

    @property
    def rotated(self) -> bool:
        """Its stale keys sit elsewhere than its queries expect: late queries get rotated copies."""
        return self.shift != 0 and self.stale[1] > self.stale[0]

    def segments(self) -> list[Segment]:
        n, (h0, h1), (a, b) = len(self.tokens), self.hidden or (0, 0), self.stale

        def seen(end: int) -> list[tuple[int, int]]:  # base columns [0, end) less the hidden span
            return [r for r in ((0, h0), (h1, end)) if r[1] > r[0]] if h1 > h0 else [(0, end)]

        if h1 > self.prefix:  # the span ends where the answer starts: the first query lies inside it
            return [Segment(0, 1, [(0, self.prefix)], None, 0), Segment(1, n, seen(self.prefix), None, 1)]
        late = seen(self.prefix) + ([(a, b)] if b > a and not self.shift else [])
        segments = [Segment(0, min(self.window, n), seen(self.prefix), None, 0)] if self.window else []
        if n > self.window:
            segments.append(Segment(self.window, n, late, (a, b) if self.rotated else None, 0))
        return segments


@dataclass(frozen=True)
class Segment:
    """Local queries [q0, q1) of a row: each sees base columns `base`, the `rotated` base columns
    through a rotated copy of itself, and the row's fed keys from `fed_from` up to itself."""

    q0: int
    q1: int
    base: list[tuple[int, int]]
    rotated: tuple[int, int] | None
    fed_from: int


@dataclass(frozen=True)
class Piece:
    """A segment's queries inside one chunk: packed [p0, p1), local [s0, s1), rotated copies [r0, r1)."""

    row: int
    segment: Segment
    p0: int
    p1: int
    s0: int
    r0: int


@dataclass(eq=False)
class Chunk:
    """Packed queries [c0, c1) of a pass, fed in one forward: what both kernels read for them."""

    c0: int
    c1: int
    pieces: list[Piece]
    rot0: int  # the chunk's rotated query copies: [rot0, rot1) of the pass's
    rot1: int
    tiles: tuple[int, int] = (0, 0)  # block table shape (query tiles, key tiles)
    table: torch.Tensor | None = None  # (query tiles, key tiles) bool, on the host until `pack` moves it
    block_mask: object = None  # set by the fused kernel when it first needs it


@dataclass(eq=False)
class PackedPass:
    """A pass's rows as one sequence on the device, plus the host-side plan of its chunks."""

    rows: list[PassRow]
    offsets: list[int]  # packed index of each row's first query
    stride: int  # store columns per slot
    fed_start: int  # store column of packed index 0
    chunks: list[Chunk]
    ids: torch.Tensor = field(repr=False)  # (1, T)
    positions: torch.Tensor = field(repr=False)  # (1, T)
    per_query: torch.Tensor = field(repr=False)  # (3, T + R): row, local index, position; rotated copies after T
    # (9, rows): base column, prefix, stale start and end, shift, window, hidden start and end, fed column
    per_row: torch.Tensor = field(repr=False)
    rot_index: torch.Tensor = field(repr=False)  # (R,) packed index of each rotated copy's query
    rot_shift: torch.Tensor = field(repr=False)  # (R,)
    answer_index: torch.Tensor = field(repr=False)  # (A,) packed index of the state predicting each answer token
    answer_targets: torch.Tensor = field(repr=False)
    answer_row: torch.Tensor = field(repr=False)
    tables: list[torch.Tensor] = field(default_factory=list, repr=False)


def pack(
    rows: list[PassRow], stride: int, fed_start: int, chunk: int, device: torch.device, blocks: bool
) -> PackedPass:
    """The pass over `rows`, fed in chunks of `chunk` packed queries; `blocks`: also each chunk's
    FlexAttention block table. Everything the device needs goes over in one copy."""
    offsets, total = [], 0
    for row in rows:
        offsets.append(total)
        total += len(row.tokens)
    rot_query: list[int] = []  # packed index of each rotated copy, in packed order
    rot_shift: list[int] = []
    q_row, q_local = [], []
    for r, row in enumerate(rows):
        q_row += [r] * len(row.tokens)
        q_local += range(len(row.tokens))
        if row.rotated:
            rot_query += range(offsets[r] + row.window, offsets[r] + len(row.tokens))
            rot_shift += [row.shift] * (len(row.tokens) - row.window)
    positions = [p for row in rows for p in row.positions]
    per_query = [q_row + [q_row[i] for i in rot_query], q_local + [q_local[i] for i in rot_query]]
    per_query.append(positions + [positions[i] for i in rot_query])
    per_row = [[], [], [], [], [], [], [], [], []]
    for r, row in enumerate(rows):
        h0, h1 = row.hidden or (0, 0)
        values = (row.slot * stride, row.prefix, *row.stale, row.shift, row.window, h0, h1, fed_start + offsets[r])
        for column, value in zip(per_row, values, strict=True):
            column.append(value)
    answer_index = [
        offsets[r] + len(row.tokens) - row.answer - 1 + k for r, row in enumerate(rows) for k in range(row.answer)
    ]
    answer_targets = [t for row in rows for t in row.tokens[len(row.tokens) - row.answer :]]
    answer_row = [r for r, row in enumerate(rows) for _ in range(row.answer)]

    chunks = []
    for c0 in range(0, total, chunk):
        c1 = min(total, c0 + chunk)
        rot0, rot1 = bisect.bisect_left(rot_query, c0), bisect.bisect_left(rot_query, c1)
        chunks.append(Chunk(c0, c1, _pieces(rows, offsets, c0, c1, rot_query), rot0, rot1))
    if blocks:
        for c in chunks:
            _block_table(c, rows, offsets, stride, fed_start, rot_query)

    flat = [
        x
        for part in ([[t for row in rows for t in row.tokens], positions], per_query, per_row)
        for xs in part
        for x in xs
    ]
    sizes = [total, total] + [len(x) for x in per_query] + [len(x) for x in per_row]
    extra = [rot_query, rot_shift, answer_index, answer_targets, answer_row]
    host = torch.tensor(flat + [x for xs in extra for x in xs], dtype=torch.long)
    tables = [c.table.flatten().long() for c in chunks if c.table is not None]
    if tables:
        host = torch.cat([host, *tables])
    on = host.to(device, non_blocking=True)  # the pass's one host-to-device copy
    parts = list(on.split(sizes + [len(x) for x in extra] + [t.numel() for t in tables]))
    ids, pos = parts[0][None], parts[1][None]
    per_q, per_r = torch.stack(parts[2:5]), torch.stack(parts[5:14])
    rot_index, rot_shift_t, a_index, a_targets, a_row = parts[14:19]
    device_tables = [t.view(c.tiles).bool() for t, c in zip(parts[19:], chunks, strict=False)]
    return PackedPass(
        rows, offsets, stride, fed_start, chunks, ids, pos, per_q, per_r, rot_index, rot_shift_t,
        a_index, a_targets, a_row, device_tables,
    )  # fmt: skip


def _pieces(rows: list[PassRow], offsets: list[int], c0: int, c1: int, rot_query: list[int]) -> list[Piece]:
    pieces = []
    for r, row in enumerate(rows):
        o = offsets[r]
        if o >= c1 or o + len(row.tokens) <= c0:
            continue
        for seg in row.segments():
            s0, s1 = max(seg.q0, c0 - o), min(seg.q1, c1 - o)
            if s1 > s0:
                r0 = bisect.bisect_left(rot_query, o + s0) if seg.rotated else 0
                pieces.append(Piece(r, seg, o + s0, o + s1, s0, r0))
    return pieces


def _block_table(
    c: Chunk, rows: list[PassRow], offsets: list[int], stride: int, fed_start: int, rot: list[int]
) -> None:
    """Which (query tile, key tile) pairs hold a visible key, from the rows' ranges: queries are the
    chunk's, then its rotated copies; keys the store's columns up to the chunk's last fed key."""
    queries, keys = c.c1 - c.c0 + c.rot1 - c.rot0, fed_start + c.c1
    table = torch.zeros(-(-queries // BLOCK), -(-keys // BLOCK), dtype=torch.bool)
    for piece in c.pieces:
        row, o = rows[piece.row], offsets[piece.row]
        base = row.slot * stride
        spans = [(piece.p0 - c.c0, piece.p1 - c.c0, [(base + a, base + b) for a, b in piece.segment.base])]
        spans[0][2].append((fed_start + o + piece.segment.fed_from, fed_start + piece.p1))
        if piece.segment.rotated:
            first = c.c1 - c.c0 + piece.r0 - c.rot0
            a, b = piece.segment.rotated
            spans.append((first, first + piece.p1 - piece.p0, [(base + a, base + b)]))
        for q0, q1, ranges in spans:
            for k0, k1 in ranges:
                if k1 > k0:
                    table[q0 // BLOCK : (q1 - 1) // BLOCK + 1, k0 // BLOCK : (k1 - 1) // BLOCK + 1] = True
    c.table, c.tiles = table, tuple(table.shape)


@dataclass
class PassState:
    """What the attention function needs for one chunk of a pass; the same object for every layer."""

    store: KVStore
    plan: PackedPass
    chunk: Chunk
    kernel: Kernel
    cos: torch.Tensor | None  # (1, 1, R, dim): RoPE of each rotated copy's shift
    sin: torch.Tensor | None


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE by the angles in cos and sin: a query turned by `shift` meets a key `shift` positions
    further on as the unturned query meets it moved back (the rotations compose exactly)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin
