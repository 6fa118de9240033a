"""The server's queue of prepared traces, and the fair choice of the next batch.

Work is counted in feed tokens (`PreparedTrace.feed_tokens`: the base pass plus every
counterfactual row), the engine's real cost, not in traces: one trace may cost as much as a
hundred others.

Fairness is deficit round robin over requests. Each time a batch forms, every waiting request is
credited an equal share of the batch budget; it may put traces into the batch while their cost is
within its credit, and unspent credit carries over to the next batch. A request alone in the queue
gets whole batches; next to others it gets its share, so a request of many heavy traces takes one
batch in several while small requests beside it go through at their usual pace, and no request
starves (its credit grows every batch until its next trace fits). A request that has had its turn
goes to the back of the round.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from ccapo_server.tickets import QueueItem, Ticket

_SLACK = 1e-6  # float credit that rounds a hair under a trace's cost still affords it


@dataclass(eq=False)
class _Waiting:
    items: deque[QueueItem] = field(default_factory=deque)
    credit: float = 0.0


class WorkQueue:
    def __init__(self) -> None:
        self._requests: dict[Ticket, _Waiting] = {}  # in round order: insertion order, moved to the back when served
        self.traces = 0
        self.tokens = 0

    def __bool__(self) -> bool:
        return bool(self._requests)

    def tickets(self) -> list[Ticket]:
        return list(self._requests)

    def drop_gone(self) -> list[QueueItem]:
        """Remove the traces of every request that is gone (deadline passed, abandoned); returns them."""
        return [item for ticket in self.tickets() if ticket.gone for item in self.drop(ticket)]

    def push(self, ticket: Ticket, items: Iterable[QueueItem]) -> None:
        waiting = self._requests.setdefault(ticket, _Waiting())
        for item in items:
            waiting.items.append(item)
            self._count(item, +1)

    def drop(self, ticket: Ticket) -> list[QueueItem]:
        """Remove a request's queued traces (it is gone, or failed); returns them."""
        waiting = self._requests.pop(ticket, None)
        if waiting is None:
            return []
        for item in waiting.items:
            self._count(item, -1)
        return list(waiting.items)

    def next_batch(self, budget: int, *, started_only: bool = False) -> list[QueueItem]:
        """Take the next batch, within `budget` feed tokens unless a single trace costs more.

        With `started_only`, only requests of which some
        trace was already scored are served (a model swap waits for them to finish).
        """
        eligible = [t for t in self._requests if t.started or not started_only]
        if not eligible:
            return []
        share = budget / len(eligible)

        def rounds_until_head_fits(waiting: _Waiting) -> int:
            return math.ceil((_cost(waiting.items[0], budget) - waiting.credit) / share)

        # Credit as many rounds at once as the first request to afford its next trace needs: no batch is empty.
        rounds = max(1, min(rounds_until_head_fits(self._requests[t]) for t in eligible))
        batch: list[QueueItem] = []
        room = budget
        served: list[Ticket] = []
        for ticket in eligible:
            waiting = self._requests[ticket]
            waiting.credit += rounds * share
            while waiting.items and (cost := _cost(waiting.items[0], budget)) <= min(waiting.credit + _SLACK, room):
                batch.append(waiting.items.popleft())
                self._count(batch[-1], -1)
                waiting.credit -= cost
                room -= cost
                if ticket not in served:
                    served.append(ticket)
        for ticket in served:
            waiting = self._requests.pop(ticket)
            if waiting.items:
                self._requests[ticket] = waiting  # to the back of the round
        return batch

    def _count(self, item: QueueItem, sign: int) -> None:
        self.traces += sign
        self.tokens += sign * item.cost


def _cost(item: QueueItem, budget: int) -> int:
    # A trace over the whole budget runs alone and is charged one batch; an unscorable one costs a token.
    return max(1, min(item.cost, budget))
