"""Stopping on a signal: SIGTERM or Ctrl-C finishes the current step, saves a checkpoint and stops."""

from __future__ import annotations

import logging
import signal
from types import FrameType

logger = logging.getLogger(__name__)


class StopSignals:
    """While entered, SIGTERM and SIGINT set `received` (the signal's name) instead of killing the
    process; a second Ctrl-C aborts at once. Off the main thread the handlers stay as they are."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        try:
            self._previous = {s: signal.signal(s, self._request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        except ValueError:  # not the main thread: signals stay with whoever owns them
            self._previous = {}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = name
        logger.warning("%s: finishing this step, then saving a checkpoint (Ctrl-C again to abort)", name)
