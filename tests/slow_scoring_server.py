"""The scoring server (`python -m ccapo_server`) whose chosen scoring batches outlast the deadline: for part retries.

    python tests/slow_scoring_server.py CALLS --model DIR [any other ccapo serve flag]

CALLS lists batch numbers (comma-separated, counting from 1, batches without a forward pass not
counted): those batches run only once every request in them is gone (past its deadline, which the
server answers with 504, or its client away), as a batch does on an overloaded node. Everything
else, the deadline and the 504 included, is the real server. `live_server.spawn_server(...,
slow_batches=...)` runs it.
"""

from __future__ import annotations

import sys
import time

from ccapo_server import app, cli
from ccapo_server.runtime import ScorerFactory, default_scorer_factory
from ccapo_server.settings import ServerSettings

from ccapo import Scorer

GIVE_UP_S = 120.0  # a request without a deadline would hold the batch forever: run it after this


def stalled(calls: set[int]) -> None:
    """Make the batches numbered in `calls` wait until their requests are gone, then run (skipping them)."""

    def factory(settings: ServerSettings) -> ScorerFactory:
        load = default_scorer_factory(settings)
        count = 0

        def stalling_load(model: str | None) -> Scorer:
            scorer = load(model)
            compute = scorer.compute_cancellable

            def compute_cancellable(jobs, cancelled):  # type: ignore[no-untyped-def]
                nonlocal count
                if jobs:
                    count += 1
                    if count in calls:
                        deadline = time.monotonic() + GIVE_UP_S
                        while not all(cancelled(i) for i in range(len(jobs))) and time.monotonic() < deadline:
                            time.sleep(0.02)
                return compute(jobs, cancelled)

            scorer.compute_cancellable = compute_cancellable  # type: ignore[method-assign]
            return scorer

        return stalling_load

    app.default_scorer_factory = factory


if __name__ == "__main__":
    stalled({int(call) for call in sys.argv[1].split(",") if call})
    sys.exit(cli.main(sys.argv[2:]))
