"""What each intervention does to a scored sequence, in the two forms the engines need.

A scored sequence is `ids` = prompt + reasoning + answer, with the answer starting at `answer_start`.
A span is a half-open range `(start, end)` of positions in `ids`, inside the reasoning.

- pad: every span token becomes the placeholder token; lengths and positions are unchanged.
- delete: the span's tokens are removed; later tokens move left.
- attention: tokens stay, but no position after the span may attend to them (the span's own
  positions still attend normally, so they keep their base-pass states).

`counterfactual` gives the whole modified sequence, for the naive reference engine.
`branch` gives only what must be recomputed on top of the unmodified sequence's KV cache, for the
fast engine: everything before `prefix_len` is identical to the unmasked sequence, so its keys and
values are reused and only `tokens` are fed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Intervention = Literal["pad", "delete", "attention"]
INTERVENTIONS: tuple[Intervention, ...] = ("pad", "delete", "attention")


@dataclass(frozen=True)
class Counterfactual:
    ids: list[int]
    answer_start: int
    hidden: tuple[int, int] | None = None  # attention: key positions no later position may see


@dataclass(frozen=True)
class Branch:
    prefix_len: int  # reuse the base pass's keys/values for positions [0, prefix_len)
    tokens: list[int]  # fed at positions prefix_len, prefix_len + 1, ...
    answer_start: int  # position of the first answer token in the counterfactual sequence
    hidden: tuple[int, int] | None = None


def counterfactual(
    ids: list[int], answer_start: int, span: tuple[int, int], intervention: Intervention, placeholder: int
) -> Counterfactual:
    start, end = span
    if intervention == "pad":
        return Counterfactual(ids[:start] + [placeholder] * (end - start) + ids[end:], answer_start)
    if intervention == "delete":
        return Counterfactual(ids[:start] + ids[end:], answer_start - (end - start))
    return Counterfactual(list(ids), answer_start, hidden=(start, end))


def branch(
    ids: list[int], answer_start: int, span: tuple[int, int], intervention: Intervention, placeholder: int
) -> Branch:
    cf = counterfactual(ids, answer_start, span, intervention, placeholder)
    first_changed = span[1] if intervention == "attention" else span[0]
    # The state that predicts the first answer token sits at answer_start - 1; it must be recomputed
    # even when it lies before the first changed position (a span ending right at the answer).
    prefix_len = min(first_changed, cf.answer_start - 1)
    return Branch(prefix_len, cf.ids[prefix_len:], cf.answer_start, cf.hidden)


def visibility(
    query_pos: torch.Tensor, key_pos: torch.Tensor, hidden_start: torch.Tensor, hidden_end: torch.Tensor
) -> torch.Tensor:
    """Which keys each query may attend to: causal, minus keys hidden from positions after the span.

    Shapes: query_pos (B, Q), key_pos (B, K), hidden_start/hidden_end (B,) with start == end for
    rows that hide nothing. Returns a bool tensor (B, Q, K).
    """
    q = query_pos[:, :, None]
    k = key_pos[:, None, :]
    start, end = hidden_start[:, None, None], hidden_end[:, None, None]
    return (k <= q) & ~((k >= start) & (k < end) & (q >= end))


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, Q, K) bool -> the (B, 1, Q, K) additive float mask transformers passes to attention as is."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


@dataclass(frozen=True)
class WindowedBranch:
    """A branch that recomputes only a window after its span and the answer (the horizon estimator).

    Counterfactual positions [0, prefix) keep the base pass's keys and values; so do positions
    [cut, resume), taken from base positions `stale` (`shift` later: the span's length for `delete`),
    only with stale content. Fed: `tokens[:window]` at positions prefix .. cut - 1, then the tail and
    the answer from position resume on (resume <= answer_start - 1, the state that predicts the
    first answer token). `hidden` (attention): the span's positions,
    which no fed query after the span may see.
    """

    prefix: int
    stale: tuple[int, int]
    shift: int
    tokens: list[int]
    positions: list[int]
    window: int
    hidden: tuple[int, int] | None = None

    @property
    def exact(self) -> bool:
        """Nothing stale: the row is the exact branch."""
        return self.stale[1] == self.stale[0]


def windowed_branch(
    ids: list[int],
    answer_start: int,
    span: tuple[int, int],
    intervention: Intervention,
    placeholder: int,
    window: int,
    tail: int = 0,
) -> WindowedBranch:
    """`branch`, recomputing only the span (pad), `window` tokens after it, `tail` tokens before the
    answer and the answer."""
    b = branch(ids, answer_start, span, intervention, placeholder)
    start, end = span
    shift = end - start if intervention == "delete" else 0
    changed = end - start if intervention == "pad" else 0  # the placeholders are recomputed
    answer = b.answer_start - 1  # the state that predicts the first answer token
    cut = max(b.prefix_len, min(b.prefix_len + changed + window, answer))
    resume = max(cut, answer - tail)
    tokens = b.tokens[: cut - b.prefix_len] + b.tokens[resume - b.prefix_len :]
    positions = [*range(b.prefix_len, cut), *range(resume, b.prefix_len + len(b.tokens))]
    stale = (cut + shift, resume + shift)
    return WindowedBranch(b.prefix_len, stale, shift, tokens, positions, cut - b.prefix_len, b.hidden)
