"""The queue's batching policy (deficit round robin by feed tokens), on real queue items."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from ccapo_server.tickets import QueueItem, Ticket
from ccapo_server.work_queue import WorkQueue

from ccapo import PreparedTrace, ScoringConfig
from ccapo.jobs import EngineJob

BUDGET = 1000


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def request(loop: asyncio.AbstractEventLoop, queue: WorkQueue, costs: list[int], timeout_s: float = 60) -> Ticket:
    """A request whose traces cost `costs` feed tokens (a base pass of that many tokens, no spans)."""
    ticket = Ticket([], ScoringConfig(), deadline=time.monotonic() + timeout_s, future=loop.create_future())
    items = []
    for index, cost in enumerate(costs):
        job = EngineJob(ids=[1] * cost, answer_start=cost - 1, spans=[], intervention="delete", placeholder=0)
        items.append(QueueItem(ticket, index, PreparedTrace("", [], job=job), version=1))
    queue.push(ticket, items)
    return ticket


def owners(batch: list[QueueItem]) -> list[Ticket]:
    return [item.ticket for item in batch]


def test_a_request_alone_gets_whole_batches(loop: asyncio.AbstractEventLoop) -> None:
    queue = WorkQueue()
    request(loop, queue, [100] * 12)
    assert [len(queue.next_batch(BUDGET)) for _ in range(2)] == [10, 2]
    assert not queue and queue.tokens == queue.traces == 0


def test_small_requests_go_first_beside_a_heavy_one(loop: asyncio.AbstractEventLoop) -> None:
    queue = WorkQueue()
    heavy = request(loop, queue, [BUDGET] * 5)  # arrived first, five whole batches of work
    small = [request(loop, queue, [100]) for _ in range(8)]
    assert owners(queue.next_batch(BUDGET)) == small
    assert owners(queue.next_batch(BUDGET)) == [heavy]  # alone now: whole batches
    assert queue.tokens == 4 * BUDGET


def test_a_heavy_request_is_not_starved_by_a_stream_of_small_ones(loop: asyncio.AbstractEventLoop) -> None:
    queue = WorkQueue()
    heavy = request(loop, queue, [BUDGET])
    turns = 0
    while heavy in queue.tickets():
        turns += 1
        assert turns <= 12, "the heavy request waited more turns than its share of the credit takes"
        for _ in range(9):
            request(loop, queue, [100])  # more than a batch of small work arrives every turn
        queue.next_batch(BUDGET)


def test_gone_requests_leave_and_a_pending_swap_serves_only_started_ones(loop: asyncio.AbstractEventLoop) -> None:
    queue = WorkQueue()
    gone = request(loop, queue, [100] * 3, timeout_s=-1)
    started = request(loop, queue, [100] * 2)
    started.queue_ms = 1.0
    fresh = request(loop, queue, [100])
    assert len(queue.drop_gone()) == 3 and queue.traces == 3
    assert owners(queue.next_batch(BUDGET, started_only=True)) == [started, started]
    assert owners(queue.next_batch(BUDGET)) == [fresh]
    assert gone not in queue.tickets()
