"""Run an ASGI app inside a Ray Serve replica without a socket: its lifespan, and one request at a time.

A replica serves the real `create_app()` app this way, so every route, error, auth check and
metric behaves exactly as in the single server; only bytes cross Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message


@dataclass
class WireRequest:
    """An HTTP request as it crosses a deployment handle (picklable, no sockets)."""

    method: str
    path: str
    query: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode()
        return next((v.decode("latin-1") for k, v in self.headers if k.lower() == wanted), None)


@dataclass
class WireResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def as_dict(self) -> dict[str, Any]:
        """The plain form `ccapo_client.RayScorer` reads: status, headers (str to str), body bytes."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in self.headers}
        return {"status": self.status, "headers": headers, "body": self.body}


async def call_app(app: ASGIApp, request: WireRequest) -> WireResponse:
    """One request through `app`. Cancelling the caller cancels the app's handler, which then
    drops the request's queued traces, as a client disconnect would."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": request.path.encode(),
        "root_path": "",
        "query_string": request.query,
        "headers": request.headers,
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    body_sent = False
    never = asyncio.Event()  # the caller's connection stays open until this call is cancelled

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await never.wait()
        return {"type": "http.disconnect"}

    status = 500
    headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status, headers = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    try:
        await app(scope, receive, send)
    except Exception:
        # Starlette re-raises an unhandled error after sending its 500 answer; the app's own
        # handler has logged it, and that answer stands, as it does under uvicorn.
        if not chunks:
            raise
    return WireResponse(status, headers, b"".join(chunks))


class Lifespan:
    """An app's ASGI lifespan, started and stopped by the replica that holds the app."""

    def __init__(self, app: ASGIApp):
        self._app = app
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, self._inbox.get, self._outbox.put)
        )
        await self._inbox.put({"type": "lifespan.startup"})
        reply = await self._outbox.get()
        if reply["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"the app failed to start: {reply.get('message', reply['type'])}")

    async def stop(self) -> None:
        if self._task is None or self._task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._outbox.get()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
