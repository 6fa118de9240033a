"""The scoring server (`python -m ccapo_server`) whose model swaps load slowly: for the slow-swap tests.

    python tests/slow_loading_server.py SECONDS --model DIR [any other ccapo serve flag]

Every model load after the first sleeps SECONDS before loading, as a large checkpoint on a busy
node does; everything else is the real server. `live_server.spawn_server(..., load_delay_s=...)`
runs it.
"""

from __future__ import annotations

import sys
import time

from ccapo_server import app, cli
from ccapo_server.runtime import ScorerFactory, default_scorer_factory
from ccapo_server.settings import ServerSettings

from ccapo import Scorer


def slowed(delay_s: float) -> None:
    """Make the server's loader sleep `delay_s` before every load but the first."""

    def factory(settings: ServerSettings) -> ScorerFactory:
        load = default_scorer_factory(settings)
        loads = 0

        def slow_load(model: str | None) -> Scorer:
            nonlocal loads
            loads += 1
            if loads > 1:
                time.sleep(delay_s)
            return load(model)

        return slow_load

    app.default_scorer_factory = factory


if __name__ == "__main__":
    slowed(float(sys.argv[1]))
    sys.exit(cli.main(sys.argv[2:]))
