"""A scoring request's life in the server: its `Ticket` from arrival to answer, and what it cost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ccapo import PreparedTrace, ScoringConfig, Trace, TraceImportance


@dataclass(frozen=True)
class RequestUsage:
    traces: int
    counterfactuals: int
    forward_tokens: int
    queue_ms: float
    compute_ms: float


@dataclass(frozen=True)
class Scored:
    """A request's results, aligned with its traces, and the model version that scored them."""

    results: list[TraceImportance]
    usage: RequestUsage
    model_id: str
    version: int


@dataclass(eq=False)
class Ticket:
    """One request, from arrival to answer; `future` resolves to its `Scored` or fails with an `ApiError`.

    `gone` is read by the preparation and engine threads between steps: once the deadline has passed
    or the request was abandoned (client gone, server shutting down), its remaining work is skipped.
    """

    traces: Sequence[Trace]
    config: ScoringConfig
    deadline: float  # time.monotonic() after which nobody waits for the answer
    future: asyncio.Future[Scored]
    abandoned: bool = False
    results: list[TraceImportance | None] = field(default_factory=list)
    remaining: int = 0
    enqueued: float | None = None  # time.perf_counter() when its traces were queued
    queue_ms: float | None = None  # set when its first trace enters a batch
    compute_ms: float = 0.0
    counterfactuals: int = 0
    forward_tokens: int = 0
    version: int = 0

    @property
    def gone(self) -> bool:
        return self.abandoned or time.monotonic() > self.deadline

    @property
    def started(self) -> bool:
        return self.queue_ms is not None

    def scored(self, model_id: str) -> Scored:
        results = [r for r in self.results if r is not None]
        usage = RequestUsage(
            traces=len(results),
            counterfactuals=self.counterfactuals,
            forward_tokens=self.forward_tokens,
            queue_ms=self.queue_ms or 0.0,
            compute_ms=self.compute_ms,
        )
        return Scored(results, usage, model_id, self.version)


@dataclass(eq=False)
class QueueItem:
    """One prepared trace waiting for a batch; `cost` is the feed tokens the engine will spend on it."""

    ticket: Ticket
    index: int  # the trace's position in its request
    prepared: PreparedTrace
    version: int  # the model version it was prepared under

    @property
    def cost(self) -> int:
        return self.prepared.feed_tokens
