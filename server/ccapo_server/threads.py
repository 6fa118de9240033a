"""Blocking work (tokenizing, forward passes) off the event loop, in daemon threads.

Daemon threads, not an executor's: a process that must exit (after the shutdown's hard limit)
does not wait at interpreter exit for a forward pass that nobody will read.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def in_daemon_thread(name: str, fn: Callable[[], T]) -> asyncio.Future[T]:
    """Run `fn()` in a new daemon thread; the future resolves on the calling loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():  # the awaiting task may have been cancelled meanwhile
            outcome()

    def report(outcome: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: the process is exiting, nobody waits
            loop.call_soon_threadsafe(settle, outcome)

    def run() -> None:
        try:
            result = fn()
        except BaseException as err:  # handed to the awaiting task, which decides
            report(functools.partial(future.set_exception, err))
        else:
            report(functools.partial(future.set_result, result))

    threading.Thread(target=run, name=name, daemon=True).start()
    return future
