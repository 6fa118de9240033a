"""`ModelSwap`: where a model swap stands on the scorer(s), for callers that must not block on a slow load.

A policy checkpoint can take minutes to load on a busy node; a trainer asks for the swap, waits
as long as it chooses, and keeps training on the live model while the swap is pending.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
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


Poll = Callable[[ModelSwap, int, Any], tuple[SwapState, str | None]]
AsyncPoll = Callable[[ModelSwap, int, Any], Awaitable[tuple[SwapState, str | None]]]


def follow(swap: ModelSwap, poll: Poll, wait_s: float) -> ModelSwap:
    """Poll every server still loading `swap` until none is, one fails, or `wait_s` seconds pass.

    `poll(swap, server, what)` is one look at one server: its state and, when failed, why (it may set
    `swap.model`; else the caller does once the swap is live).
    """
    rounds = _Rounds(swap, wait_s)
    while rounds.going():
        for server, what in rounds.waiting():
            rounds.note(server, *poll(swap, server, what))
        if (pause := rounds.pause()) is None:
            break
        time.sleep(pause)
    return rounds.finish()


async def follow_async(swap: ModelSwap, poll: AsyncPoll, wait_s: float) -> ModelSwap:
    """`follow` with an awaited `poll`."""
    rounds = _Rounds(swap, wait_s)
    while rounds.going():
        for server, what in rounds.waiting():
            rounds.note(server, *await poll(swap, server, what))
        if (pause := rounds.pause()) is None:
            break
        await asyncio.sleep(pause)
    return rounds.finish()


class _Rounds:
    """Following a swap: what each look at a server means, and the pause before the next round."""

    def __init__(self, swap: ModelSwap, wait_s: float):
        self.swap = swap
        self.deadline = time.monotonic() + max(wait_s, 0.0)
        self._pause = _FIRST_POLL_S

    def going(self) -> bool:
        return self.swap.status == "pending" and bool(self.swap.waiting)

    def waiting(self) -> list[tuple[int, Any]]:
        return list(self.swap.waiting.items())

    def note(self, server: int, state: SwapState, error: str | None) -> None:
        if state == "pending" or self.swap.status != "pending":
            return
        del self.swap.waiting[server]
        if state == "failed":
            self.swap.status, self.swap.error = "failed", error

    def pause(self) -> float | None:
        """Seconds to wait before the next round; None when this one settled it or the deadline passed."""
        left = self.deadline - time.monotonic()
        if not self.going() or left <= 0:
            return None
        pause, self._pause = min(self._pause, left), min(self._pause * 2, _MAX_POLL_S)
        return pause

    def finish(self) -> ModelSwap:
        if self.swap.status == "pending" and not self.swap.waiting:
            self.swap.status = "live"
        return self.swap
