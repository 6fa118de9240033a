"""The dynamic batching queue: traces of many requests share the engine's forward passes.

A request is prepared (tokenized, segmented, validated) as soon as it arrives, so a bad trace is
rejected before anything is queued. Each trace then waits as one queue item. A single worker
takes the oldest item, waits up to `max_wait_ms` after its arrival for more to join, fills a
batch up to `max_batch_tokens` and runs the engine in one dedicated thread, so the event loop
keeps answering while the model works. A request's future resolves when all its traces are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ccapo import PreparedTrace, Scorer, ScoringConfig, Trace, TraceError, TraceImportance
from ccapo.engine import JobScores
from ccapo.interventions import branch
from ccapo_server.errors import ApiError
from ccapo_server.metrics import Metrics

logger = logging.getLogger(__name__)

_THROUGHPUT_SMOOTHING = 0.3  # weight of the newest batch in the traces/s estimate behind Retry-After


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
    """One submitted request; `future` resolves to its `Scored` or fails with an `ApiError`."""

    config: ScoringConfig
    future: asyncio.Future[Scored]
    enqueued: float  # time.perf_counter() when queued
    results: list[TraceImportance | None]
    remaining: int
    queue_ms: float | None = None  # set when its first item enters a batch
    compute_ms: float = 0.0
    counterfactuals: int = 0
    forward_tokens: int = 0
    version: int = 0

    @property
    def started(self) -> bool:
        return self.queue_ms is not None


@dataclass(eq=False)
class _Item:
    ticket: Ticket
    index: int  # the trace's position in its request
    trace: Trace
    prepared: PreparedTrace
    tokens: int  # estimated tokens the engine will feed for it
    version: int  # model version it was prepared under


class Batcher:
    def __init__(
        self,
        scorer: Scorer,
        model_id: str,
        *,
        metrics: Metrics,
        max_batch_tokens: int,
        max_wait_ms: float,
        max_queue_traces: int,
        max_tokens_per_trace: int,
    ):
        self.model_id = model_id
        self.version = 1
        self._scorer = scorer
        self._metrics = metrics
        self._max_batch_tokens = max_batch_tokens
        self._max_wait_s = max_wait_ms / 1000
        self._max_queue_traces = max_queue_traces
        self._max_tokens_per_trace = max_tokens_per_trace
        self._queue: deque[_Item] = deque()
        self._arrived = asyncio.Event()
        self._accepting = True
        self._pending_swap: tuple[Scorer, str, asyncio.Future[int]] | None = None
        self._throughput: float | None = None  # traces per second, smoothed
        # One engine thread: the model is not re-entrant, and one batch at a time is the point.
        # Tokenizing happens in its own thread so a large request never waits behind a batch.
        self._engine_pool = ThreadPoolExecutor(1, thread_name_prefix="ccapo-engine")
        self._prepare_pool = ThreadPoolExecutor(1, thread_name_prefix="ccapo-prepare")
        self._worker: asyncio.Task[None] | None = None
        metrics.model_version.set(self.version)

    @property
    def scorer(self) -> Scorer:
        return self._scorer

    @property
    def accepting(self) -> bool:
        return self._accepting

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="ccapo-batcher")

    # -- requests -------------------------------------------------------------------------------

    async def submit(self, traces: Sequence[Trace], config: ScoringConfig) -> Ticket:
        """Validate and prepare a request's traces, then queue them.

        Raises `TraceError` for a bad trace, `ApiError` for a bad config (invalid_request) or when the
        request cannot be queued (queue_full, not_ready).
        """
        self._check_room(len(traces))
        for index, trace in enumerate(traces):
            if trace.prompt_ids is not None and trace.completion_ids is not None:
                self._check_tokens(index, len(trace.prompt_ids) + len(trace.completion_ids))
        scorer, version = self._scorer, self.version
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(self._prepare_pool, _prepare_with_estimates, scorer, traces, config)
        for index, (p, _) in enumerate(prepared):
            self._check_tokens(index, _model_tokens(p))
        self._check_room(len(traces))  # the queue may have filled while this request was being prepared
        ticket = Ticket(
            config=config,
            future=loop.create_future(),
            enqueued=time.perf_counter(),
            results=[None] * len(traces),
            remaining=len(traces),
        )
        for index, (trace, (p, tokens)) in enumerate(zip(traces, prepared, strict=True)):
            self._queue.append(_Item(ticket, index, trace, p, tokens, version))
        self._metrics.queue_depth.set(len(self._queue))
        self._arrived.set()
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Drop a request that is gone (deadline passed, client disconnected): its queued traces leave the queue."""
        if not ticket.future.done():
            ticket.future.cancel()
        self._drop(ticket)

    def retry_after_s(self) -> int:
        """Whole seconds until the queue has likely made room, from the recent throughput."""
        if not self._throughput:
            return 1
        return max(1, math.ceil(len(self._queue) / self._throughput))

    def _check_room(self, n_traces: int) -> None:
        if not self._accepting:
            raise ApiError("not_ready", "the server is shutting down; retry on another replica", retry_after=1)
        if len(self._queue) + n_traces > self._max_queue_traces:
            raise ApiError(
                "queue_full",
                f"the queue holds {len(self._queue)} of at most {self._max_queue_traces} traces and cannot take "
                f"{n_traces} more; retry later",
                retry_after=self.retry_after_s(),
            )

    def _check_tokens(self, index: int, tokens: int) -> None:
        if tokens > self._max_tokens_per_trace:
            raise TraceError(
                index,
                f"the model would read {tokens} tokens for this trace, over this server's limit of "
                f"{self._max_tokens_per_trace}; shorten it",
            )

    def _drop(self, ticket: Ticket) -> None:
        if any(item.ticket is ticket for item in self._queue):
            self._queue = deque(item for item in self._queue if item.ticket is not ticket)
            self._metrics.queue_depth.set(len(self._queue))

    # -- model swap and shutdown ----------------------------------------------------------------

    async def swap(self, scorer: Scorer, model_id: str) -> int:
        """Put `scorer` in service between two batches; returns the new version.

        Queued traces stay queued (those prepared under the old model are prepared again). A request
        already partly scored finishes on the old model first, so no response mixes two models.
        """
        if not self._accepting:
            raise ApiError("not_ready", "the server is shutting down", retry_after=1)
        applied: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending_swap = (scorer, model_id, applied)
        self._arrived.set()
        return await applied

    async def drain(self) -> None:
        """Stop taking requests, finish everything queued and in flight, then stop the worker."""
        self._accepting = False
        self._arrived.set()
        if self._worker is not None:
            await self._worker
        self._engine_pool.shutdown()
        self._prepare_pool.shutdown()

    def _apply_swap(self) -> None:
        if self._pending_swap is None or (self._queue and self._queue[0].ticket.started):
            return
        scorer, model_id, applied = self._pending_swap
        self._pending_swap = None
        self._scorer, self.model_id = scorer, model_id
        self.version += 1
        self._metrics.model_version.set(self.version)
        logger.info("model %s is in service as version %d", model_id, self.version)
        applied.set_result(self.version)

    # -- the worker -----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._apply_swap()
            if not self._queue:
                if not self._accepting:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            batch = await self._collect()
            try:
                await self._score(batch)
            except Exception:  # the worker must outlive any one batch, or every later request would hang
                logger.exception("scoring a batch of %d traces failed", len(batch))
                for item in batch:
                    self._fail(item.ticket, ApiError("internal", "scoring failed; the server log has the details"))

    async def _collect(self) -> list[_Item]:
        """The next batch: the oldest items, after waiting up to max_wait from the oldest's arrival for more."""
        while self._accepting and self._pending_swap is None and self._queue:
            left = self._queue[0].ticket.enqueued + self._max_wait_s - time.perf_counter()
            if left <= 0 or sum(item.tokens for item in self._queue) >= self._max_batch_tokens:
                break
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)
        batch: list[_Item] = []
        tokens = 0
        while self._queue:
            item = self._queue[0]
            if batch and tokens + item.tokens > self._max_batch_tokens:
                break
            if self._pending_swap is not None and not item.ticket.started:
                break  # let the swap happen before any new request starts
            batch.append(self._queue.popleft())
            tokens += item.tokens
        self._metrics.queue_depth.set(len(self._queue))
        return batch

    async def _score(self, batch: list[_Item]) -> None:
        scorer, version, model_id = self._scorer, self.version, self.model_id
        started = time.perf_counter()
        for item in batch:
            ticket = item.ticket
            if not ticket.started:
                ticket.queue_ms = (started - ticket.enqueued) * 1000
                ticket.version = version
                self._metrics.queue_time.observe(ticket.queue_ms / 1000)
        stale = [item for item in batch if item.version != version]
        if stale:
            await self._prepare_again(stale, scorer, version)
        batch = [item for item in batch if not item.ticket.future.done()]
        if not batch:
            return
        self._metrics.batch_traces.observe(len(batch))
        self._metrics.batch_tokens.observe(sum(item.tokens for item in batch))

        loop = asyncio.get_running_loop()
        outcomes, engine_ms = await loop.run_in_executor(self._engine_pool, _run_batch, scorer, batch)
        for ticket in {item.ticket for item in batch}:
            ticket.compute_ms += engine_ms
        for item, (result, scores) in zip(batch, outcomes, strict=True):
            ticket = item.ticket
            if ticket.future.done():
                continue  # gone while its batch ran
            ticket.results[item.index] = result
            ticket.remaining -= 1
            if item.prepared.job is not None and scores is not None:
                ticket.counterfactuals += len(item.prepared.job.spans)
                ticket.forward_tokens += scores.forward_tokens
            if ticket.remaining == 0:
                ticket.future.set_result(_scored(ticket, model_id))
        rate = len(batch) / max(time.perf_counter() - started, 1e-6)
        self._throughput = rate if self._throughput is None else _smooth(self._throughput, rate)

    async def _prepare_again(self, items: list[_Item], scorer: Scorer, version: int) -> None:
        """Items queued before a model swap: tokenization and vocabulary may differ under the new model."""
        loop = asyncio.get_running_loop()
        for item in items:
            if item.ticket.future.done():
                continue
            try:
                [(prepared, tokens)] = await loop.run_in_executor(
                    self._prepare_pool, _prepare_with_estimates, scorer, [item.trace], item.ticket.config
                )
                self._check_tokens(0, _model_tokens(prepared))
            except TraceError as err:  # raised as trace 0 of a one-trace call: name its place in the request
                self._fail(item.ticket, ApiError.from_trace_error(TraceError(item.index, err.detail)))
                continue
            except ApiError as err:
                self._fail(item.ticket, err)
                continue
            item.prepared, item.tokens, item.version = prepared, tokens, version

    def _fail(self, ticket: Ticket, error: ApiError) -> None:
        if not ticket.future.done():
            ticket.future.set_exception(error)
        self._drop(ticket)


def prepare(scorer: Scorer, traces: Sequence[Trace], config: ScoringConfig) -> list[PreparedTrace]:
    """`scorer.prepare`; a placeholder the tokenizer cannot use is the request's config error."""
    try:
        scorer.placeholder_id(config.placeholder)
    except ValueError as err:
        raise ApiError("invalid_request", f"config.placeholder: {err}") from None
    return scorer.prepare(traces, config)


def _prepare_with_estimates(
    scorer: Scorer, traces: Sequence[Trace], config: ScoringConfig
) -> list[tuple[PreparedTrace, int]]:
    # The estimate builds every counterfactual's branch: work for the prepare thread, not the event loop.
    return [(p, _feed_tokens(p)) for p in prepare(scorer, traces, config)]


def _run_batch(scorer: Scorer, batch: list[_Item]) -> tuple[list[tuple[TraceImportance, JobScores | None]], float]:
    """In the engine thread: one engine call for the whole batch, then each trace's result."""
    jobs = [item.prepared.job for item in batch if item.prepared.job is not None]
    started = time.perf_counter()
    scores = iter(scorer.compute(jobs))
    engine_ms = (time.perf_counter() - started) * 1000
    outcomes = []
    for item in batch:
        job_scores = next(scores) if item.prepared.job is not None else None
        outcomes.append((scorer.result(item.prepared, job_scores, item.ticket.config), job_scores))
    return outcomes, engine_ms


def _scored(ticket: Ticket, model_id: str) -> Scored:
    results = [r for r in ticket.results if r is not None]
    usage = RequestUsage(
        traces=len(results),
        counterfactuals=ticket.counterfactuals,
        forward_tokens=ticket.forward_tokens,
        queue_ms=ticket.queue_ms or 0.0,
        compute_ms=ticket.compute_ms,
    )
    return Scored(results, usage, model_id, ticket.version)


def _model_tokens(prepared: PreparedTrace) -> int:
    """Tokens the model reads for a trace: the scored sequence, or the completion when it is unscorable."""
    return len(prepared.job.ids) if prepared.job is not None else len(prepared.tokens)


def _feed_tokens(prepared: PreparedTrace) -> int:
    """Tokens the engine feeds for a trace: its base pass plus each counterfactual's recomputed suffix."""
    job = prepared.job
    if job is None:
        return 0
    branches = (branch(job.ids, job.answer_start, span, job.intervention, job.placeholder) for span in job.spans)
    return len(job.ids) + sum(len(b.tokens) for b in branches)


def _smooth(old: float, new: float) -> float:
    return (1 - _THROUGHPUT_SMOOTHING) * old + _THROUGHPUT_SMOOTHING * new
