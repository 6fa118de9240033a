"""The worker: takes batches from the `WorkQueue` and runs them through the engine, one at a time.

It waits up to `max_wait_ms` after the oldest queued request for others to join, takes a fair
batch of up to `server_batch_tokens` feed tokens, and runs it in an engine thread, so the event
loop keeps answering while the model works. The engine asks before every forward pass whether
each trace's request is still wanted, and once no request of a group is, the pass in flight stops
at its next decoder layer (ccapo.cancellation). Model swaps happen between batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time

from ccapo import Scorer, TraceImportance
from ccapo.jobs import JobScores
from ccapo_server.admission import Admission
from ccapo_server.errors import ApiError
from ccapo_server.metrics import Metrics
from ccapo_server.settings import ServerSettings
from ccapo_server.threads import in_daemon_thread
from ccapo_server.tickets import QueueItem, Ticket
from ccapo_server.work_queue import WorkQueue

logger = logging.getLogger(__name__)

_RATE_SMOOTHING = 0.3  # weight of the newest batch in the drain-rate estimate behind Retry-After


class Worker:
    def __init__(self, scorer: Scorer, model_id: str, settings: ServerSettings, metrics: Metrics, admission: Admission):
        self.scorer = scorer
        self.model_id = model_id
        self.version = 1
        self.queue = WorkQueue()
        self._settings = settings
        self._metrics = metrics
        self._admission = admission
        self._arrived = asyncio.Event()
        self._stopping = False
        self._pending_swap: tuple[Scorer, str, asyncio.Future[int]] | None = None
        self._drain_rate: float | None = None  # feed tokens per second, smoothed
        self._task: asyncio.Task[None] | None = None
        metrics.model_version.set(self.version)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ccapo-worker")

    def push(self, ticket: Ticket, items: list[QueueItem]) -> None:
        ticket.enqueued = time.perf_counter()
        self.queue.push(ticket, items)
        self._show_queue()
        self._arrived.set()

    def drop(self, ticket: Ticket) -> None:
        if dropped := self.queue.drop(ticket):
            self._metrics.dropped_traces.labels("queue").inc(len(dropped))
            self._show_queue()

    def retry_after_s(self, tokens: int) -> int:
        """Whole seconds until the queue has likely drained `tokens` feed tokens, at the recent rate."""
        if not self._drain_rate:
            return 1
        return max(1, math.ceil(tokens / self._drain_rate))

    async def swap(self, scorer: Scorer, model_id: str) -> int:
        """Put `scorer` in service between two batches; returns the new version.

        Queued traces stay queued (they are prepared again under the new model). Requests already
        partly scored finish on the old model first, so no response mixes two models.
        """
        applied: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending_swap = (scorer, model_id, applied)
        self._arrived.set()
        return await applied

    async def stop(self) -> None:
        """Finish the queue, then end; callers fail or abandon what must not run first."""
        self._stopping = True
        self._arrived.set()
        if self._task is not None:
            await self._task

    # -- the loop -------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._apply_swap()
            if not self.queue:
                if self._stopping:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._wait_for_company()
            if dropped := self.queue.drop_gone():  # their routes answer 504 or saw the client leave
                self._metrics.dropped_traces.labels("queue").inc(len(dropped))
            self._apply_swap()  # a swap that arrived while the batch waited goes first
            # A swap still pending waits for partly scored requests: only they may run until it happens.
            batch = self.queue.next_batch(
                self._settings.server_batch_tokens, started_only=self._pending_swap is not None
            )
            self._show_queue()
            if not batch:
                continue
            try:
                await self._score(batch)
            except Exception:  # the worker must outlive any one batch, or every later request would hang
                logger.exception("scoring a batch of %d traces failed", len(batch))
                for item in batch:
                    self._fail(item.ticket, ApiError("internal", "scoring failed; the server log has the details"))

    async def _wait_for_company(self) -> None:
        """Up to max_wait after the oldest queued request's arrival, unless a full batch is already there."""
        max_wait_s = self._settings.max_wait_ms / 1000
        while not self._stopping and self._pending_swap is None and self.queue:
            oldest = min(t.enqueued or 0.0 for t in self.queue.tickets())
            left = oldest + max_wait_s - time.perf_counter()
            if left <= 0 or self.queue.tokens >= self._settings.server_batch_tokens:
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)

    def _swap_waits(self) -> bool:
        return self._pending_swap is not None and any(t.started for t in self.queue.tickets())

    def _apply_swap(self) -> None:
        if self._pending_swap is None or self._swap_waits():
            return
        scorer, model_id, applied = self._pending_swap
        self._pending_swap = None
        self.scorer, self.model_id = scorer, model_id
        self.version += 1
        self._metrics.model_version.set(self.version)
        logger.info("model %s is in service as version %d", model_id, self.version)
        applied.set_result(self.version)

    async def _score(self, batch: list[QueueItem]) -> None:
        scorer, version, model_id = self.scorer, self.version, self.model_id
        started = time.perf_counter()
        for item in batch:
            ticket = item.ticket
            if not ticket.started:
                ticket.queue_ms = (started - (ticket.enqueued or started)) * 1000
                ticket.version = version
                self._metrics.queue_time.observe(ticket.queue_ms / 1000)
        stale = [item for item in batch if item.version != version]
        if stale:
            await in_daemon_thread("ccapo-prepare", lambda: self._prepare_again(stale, scorer, version))
        batch = [item for item in batch if not item.ticket.future.done() and not item.ticket.gone]
        if not batch:
            return
        tokens = sum(item.cost for item in batch)
        self._metrics.batch_traces.observe(len(batch))
        self._metrics.batch_tokens.observe(tokens)

        outcomes, engine_ms = await in_daemon_thread("ccapo-engine", lambda: _run_batch(scorer, batch))
        done_tokens = 0
        for ticket in {item.ticket for item in batch}:
            ticket.compute_ms += engine_ms
        for item, outcome in zip(batch, outcomes, strict=True):
            ticket = item.ticket
            if outcome is None or ticket.future.done():
                self._metrics.dropped_traces.labels("engine").inc()
                continue  # gone while its batch ran
            result, scores = outcome
            ticket.results[item.index] = result
            ticket.remaining -= 1
            done_tokens += item.cost
            if scores is not None:
                ticket.counterfactuals += item.prepared.counterfactuals
                ticket.forward_tokens += scores.forward_tokens
            if ticket.remaining == 0:
                ticket.future.set_result(ticket.scored(model_id))
        rate = tokens / max(time.perf_counter() - started, 1e-6)
        self._drain_rate = rate if self._drain_rate is None else _smooth(self._drain_rate, rate)

    def _prepare_again(self, items: list[QueueItem], scorer: Scorer, version: int) -> None:
        """In a thread: items queued before a model swap are prepared again under the new model."""
        for item in items:
            if item.ticket.future.done() or item.ticket.gone:
                continue
            try:
                item.prepared = self._admission.prepare_again(scorer, item.ticket, item.index)
            except ApiError as err:
                item.ticket.future.get_loop().call_soon_threadsafe(self._fail, item.ticket, err)
                continue
            item.version = version

    def _fail(self, ticket: Ticket, error: ApiError) -> None:
        if not ticket.future.done():
            ticket.future.set_exception(error)
        self.drop(ticket)

    def _show_queue(self) -> None:
        self._metrics.queue_depth.set(self.queue.traces)
        self._metrics.queue_tokens.set(self.queue.tokens)


Outcome = tuple[TraceImportance, JobScores | None] | None  # None: its request went away mid-batch


def _run_batch(scorer: Scorer, batch: list[QueueItem]) -> tuple[list[Outcome], float]:
    """In the engine thread: one engine call for the whole batch, then each trace's result."""
    scored = [item for item in batch if item.prepared.job is not None]
    jobs = [item.prepared.job for item in scored if item.prepared.job is not None]
    started = time.perf_counter()
    scores = scorer.compute_cancellable(jobs, lambda i: scored[i].ticket.gone)
    engine_ms = (time.perf_counter() - started) * 1000
    by_item = dict(zip(map(id, scored), scores, strict=True))
    outcomes: list[Outcome] = []
    for item in batch:
        job_scores = by_item.get(id(item))
        if item.prepared.job is not None and job_scores is None:
            outcomes.append(None)
            continue
        outcomes.append((scorer.result(item.prepared, job_scores, item.ticket.config), job_scores))
    return outcomes, engine_ms


def _smooth(old: float, new: float) -> float:
    return (1 - _RATE_SMOOTHING) * old + _RATE_SMOOTHING * new
