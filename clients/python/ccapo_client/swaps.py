"""`ModelSwap`: where a model swap stands on the scorer(s), for callers that must not block on a slow load.

A policy checkpoint can take minutes to load on a busy node; a trainer asks for the swap, waits
as long as it chooses, and keeps training on the live model while the swap is pending.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ccapo_client.models import ModelInfo

SwapState = Literal["pending", "live", "failed"]
_FIRST_POLL_S = 0.1
_MAX_POLL_S = 2.0


@dataclass
class ModelSwap:
    """A swap to `path`: "live" (`model` is the info of the model now in service), "pending" (still
    loading: ask again with the client's `swap_status`), or "failed" (`error` says why; the scorer
    keeps its older model)."""

    path: str
    status: SwapState = "pending"
    model: ModelInfo | None = None
    error: str | None = None
    # What each server still loading is polled through: the swap's URL path (HTTP), the call (Ray).
    waiting: dict[int, Any] = field(default_factory=dict, repr=False)


def follow(
    swap: ModelSwap, poll: Callable[[ModelSwap, int, Any], tuple[SwapState, str | None]], wait_s: float
) -> ModelSwap:
    """Poll every server still loading `swap` until none is, one fails, or `wait_s` seconds pass.

    `poll(swap, server, what)` is one look at one server: its state and, when failed, why (it may set
    `swap.model`; else the caller does once the swap is live).
    """
    if swap.status != "pending":
        return swap
    deadline = time.monotonic() + max(wait_s, 0.0)
    pause = _FIRST_POLL_S
    while swap.waiting:
        for server, what in list(swap.waiting.items()):
            state, error = poll(swap, server, what)
            if state == "pending":
                continue
            del swap.waiting[server]
            if state == "failed":
                swap.status, swap.error = "failed", error
                return swap
        left = deadline - time.monotonic()
        if not swap.waiting or left <= 0:
            break
        time.sleep(min(pause, left))
        pause = min(pause * 2, _MAX_POLL_S)
    if not swap.waiting:
        swap.status = "live"
    return swap
