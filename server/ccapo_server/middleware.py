"""Pure ASGI middleware: the request body size limit, and per-request metrics."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ccapo_server.errors import ApiError, error_response
from ccapo_server.metrics import Metrics


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Answers 413 for a body over `max_bytes`: by its Content-Length at once, or while it streams in.

    Counting the streamed bytes matters: a chunked body has no Content-Length, and a lying one
    would otherwise be read whole into memory.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, count_error: Callable[[str], None]):
        self.app = app
        self.max_bytes = max_bytes
        self.count_error = count_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return

        received = 0
        exceeded = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # Whatever the app makes of the aborted read (FastAPI turns it into a 400), the answer is 413.
            if not exceeded:
                await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, limited_receive, guarded_send)
        if exceeded:
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.count_error("payload_too_large")
        error = ApiError("payload_too_large", f"the request body is over this server's limit of {self.max_bytes} bytes")
        await error_response(error)(scope, receive, send)


class RequestMetrics:
    """Counts requests by route, method and status, and times them by route."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = _route_template(scope)
        status = 500  # stays so only if the app dies before answering

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, observed_send)
        finally:
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()


def _route_template(scope: Scope) -> str:
    """The matching route's path template; unknown paths share one label so they cannot blow up the series."""
    for route in scope["app"].routes:
        match, _ = route.matches(scope)
        if match != Match.NONE:
            return route.path
    return "unmatched"
