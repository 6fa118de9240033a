"""A scoring request's path through the server, and an honest shutdown.

`submit` opens a `Ticket` at once; in the background the request is prepared and costed
(`Admission`), checked against the queue's room, and queued for the `Worker`. Whatever fails on
the way fails the ticket's future with the error to answer. The route waits on that future with
the request's deadline and its client's connection, and `cancel`s the ticket when either is gone:
its traces leave the queue, and the engine skips what it was computing for them.

On SIGTERM (`begin_shutdown`) no request is admitted any more (503 `shutting_down` with
Retry-After); the open ones may finish within the grace period, then get 503 `shutting_down`
and their work is abandoned. The worker must stop within a hard limit after that.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from ccapo import Scorer, ScoringConfig, Trace
from ccapo_server.admission import Admission, Gone
from ccapo_server.errors import ApiError
from ccapo_server.metrics import Metrics
from ccapo_server.settings import ServerSettings
from ccapo_server.tickets import QueueItem, Ticket
from ccapo_server.worker import Worker

logger = logging.getLogger(__name__)

SHUTDOWN_RETRY_AFTER_S = 5  # a replacement replica is usually up by then


class Scheduler:
    def __init__(self, scorer: Scorer, model_id: str, settings: ServerSettings, metrics: Metrics):
        self._settings = settings
        self._metrics = metrics
        self._admission = Admission(settings)
        self.worker = Worker(scorer, model_id, settings, metrics, self._admission)
        self._open: set[Ticket] = set()
        self._admitting: set[asyncio.Task[None]] = set()  # strong references: the loop keeps only weak ones
        self._shutdown: _ShutdownTally | None = None

    @property
    def accepting(self) -> bool:
        return self._shutdown is None

    @property
    def scorer(self) -> Scorer:
        return self.worker.scorer

    @property
    def model_id(self) -> str:
        return self.worker.model_id

    @property
    def version(self) -> int:
        return self.worker.version

    @version.setter
    def version(self, version: int) -> None:
        """Renumber the model in service (a replica following a registry's numbering)."""
        self.worker.version = version

    def start(self) -> None:
        self.worker.start()

    def submit(self, traces: Sequence[Trace], config: ScoringConfig, timeout_s: float) -> Ticket:
        """Open a ticket for a request and start admitting it; raises `ApiError` when it cannot be taken now."""
        if self._shutdown is not None:
            self._shutdown.refused += 1
            raise _shutting_down("the server is shutting down and takes no new requests; retry on another replica")
        self._check_room(1, 1)  # a full queue refuses before any tokenizing
        loop = asyncio.get_running_loop()
        ticket = Ticket(traces, config, deadline=time.monotonic() + timeout_s, future=loop.create_future())
        self._open.add(ticket)
        self._metrics.requests_open.set(len(self._open))
        ticket.future.add_done_callback(lambda _: self._close(ticket))
        task = loop.create_task(self._admit(ticket), name="ccapo-admit")
        self._admitting.add(task)
        task.add_done_callback(self._admitting.discard)
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Drop a request that is gone (deadline passed, client away): out of the queue, skipped by the engine."""
        ticket.abandoned = True
        if not ticket.future.done():
            ticket.future.cancel()
        self.worker.drop(ticket)

    async def swap(self, scorer: Scorer, model_id: str) -> int:
        if self._shutdown is not None:
            raise _shutting_down("the server is shutting down; load the model on the next one")
        return await self.worker.swap(scorer, model_id)

    async def _admit(self, ticket: Ticket) -> None:
        scorer, version = self.worker.scorer, self.worker.version
        try:
            prepared = await self._admission.prepare(scorer, ticket)
            if self._shutdown is not None:
                raise _shutting_down("the server began shutting down while this request was being prepared")
            self._check_room(len(prepared), sum(p.feed_tokens for p in prepared))
        except Gone:
            self._metrics.dropped_traces.labels("preparation").inc(len(ticket.traces))
            return
        except ApiError as err:
            _fail(ticket, err)
            return
        except Exception:  # a bug, not the request's fault: answer 500 rather than leave it waiting
            logger.exception("admitting a request failed")
            _fail(ticket, ApiError("internal", "preparing the request failed; the server log has the details"))
            return
        if ticket.future.done() or ticket.gone:
            return
        ticket.results = [None] * len(prepared)
        ticket.remaining = len(prepared)
        self.worker.push(ticket, [QueueItem(ticket, i, p, version) for i, p in enumerate(prepared)])

    def _check_room(self, traces: int, tokens: int) -> None:
        queue, settings = self.worker.queue, self._settings
        over_tokens = queue.tokens + tokens - settings.max_queue_tokens
        if over_tokens > 0 or queue.traces + traces > settings.max_queue_traces:
            raise ApiError(
                "queue_full",
                f"the queue holds {queue.tokens} feed tokens in {queue.traces} traces, and its limits are "
                f"{settings.max_queue_tokens} feed tokens and {settings.max_queue_traces} traces: no room for this "
                "request now; retry later",
                retry_after=self.worker.retry_after_s(max(over_tokens, 1)),
            )

    # -- shutdown -------------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Stop admitting; open requests may finish within the grace period, then get 503. Idempotent."""
        if self._shutdown is not None:
            return
        self._shutdown = _ShutdownTally(in_flight=len(self._open))
        for ticket in self._open:
            ticket.future.add_done_callback(self._shutdown.count)
        grace = self._settings.graceful_timeout_s
        logger.info(
            "shutting down: %d requests in flight may take up to %d s; new ones get 503", len(self._open), grace
        )
        asyncio.get_running_loop().call_later(grace, self._abandon_open)

    async def stop(self) -> None:
        """Shut down (if SIGTERM did not already start it), then stop the worker within the hard limit."""
        self.begin_shutdown()
        assert self._shutdown is not None
        left = self._shutdown.began + self._settings.graceful_timeout_s - time.monotonic()
        if self._open and left > 0:
            await asyncio.wait([t.future for t in self._open], timeout=left)
        self._abandon_open()
        try:
            await asyncio.wait_for(self.worker.stop(), self._settings.shutdown_timeout_s)
        except TimeoutError:
            logger.error(
                "the engine did not stop within %g s of the grace period's end; exiting without it",
                self._settings.shutdown_timeout_s,
            )
        logger.info("stopped: %s", self._shutdown.summary())

    def _abandon_open(self) -> None:
        for ticket in list(self._open):
            ticket.abandoned = True
            _fail(ticket, _shutting_down("the server shut down before this request was scored; retry elsewhere"))
            self.worker.drop(ticket)

    def _close(self, ticket: Ticket) -> None:
        self._open.discard(ticket)
        self._metrics.requests_open.set(len(self._open))


class _ShutdownTally:
    """How the requests open at SIGTERM ended, and how many new ones were turned away: the truthful log line."""

    def __init__(self, in_flight: int):
        self.began = time.monotonic()
        self.in_flight = in_flight
        self.answered = 0
        self.shut_out = 0
        self.other = 0
        self.refused = 0

    def count(self, future: asyncio.Future[object]) -> None:
        if future.cancelled():
            self.other += 1
        elif isinstance(error := future.exception(), ApiError) and error.type == "shutting_down":
            self.shut_out += 1
        elif future.exception() is None:
            self.answered += 1
        else:
            self.other += 1

    def summary(self) -> str:
        return (
            f"of {self.in_flight} requests in flight at shutdown, {self.answered} were answered with results, "
            f"{self.shut_out} got 503 shutting_down, {self.other} ended otherwise (deadline, client gone, bad "
            f"request); {self.refused} new requests were refused with 503"
        )


def _shutting_down(message: str) -> ApiError:
    return ApiError("shutting_down", message, retry_after=SHUTDOWN_RETRY_AFTER_S)


def _fail(ticket: Ticket, error: ApiError) -> None:
    if not ticket.future.done():
        ticket.future.set_exception(error)
