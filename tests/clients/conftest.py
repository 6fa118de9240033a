"""The `serve` fixture: fake scoring servers on real uvicorn, on free loopback ports."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import uvicorn
from fake_scoring_server import FakeServer
from starlette.applications import Starlette
from starlette.routing import Route


@pytest.fixture
def serve() -> Iterator[Callable[..., FakeServer]]:
    """Start fake servers on free loopback ports; all stop at the end of the test."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(fake: FakeServer | None = None) -> FakeServer:
        fake = fake or FakeServer()
        app = Starlette(routes=[Route("/{path:path}", fake.handle, methods=["GET", "POST"])])
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        fake.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread))
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "the fake server did not start"
            time.sleep(0.01)
        return fake

    yield start
    for server, _ in running:
        server.should_exit = True
    for _, thread in running:
        thread.join(timeout=10)
