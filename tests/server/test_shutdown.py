"""SIGTERM: the server stops taking connections, answers what it holds, and exits 0."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from live_server import spawn_server, stop_server, wait_ready
from metrics_text import wait_for_queue


def test_sigterm_drains_in_flight_requests(tiny_model_dir: str, text_trace: dict[str, Any]) -> None:
    server = spawn_server(tiny_model_dir, {"CCAPO_MAX_WAIT_MS": "2000"})
    try:
        wait_ready(server)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.post, f"{server.url}/v1/importance", json={"traces": [text_trace]}, timeout=30)
            wait_for_queue(server.url, 1)  # queued, and its batch is still 2 s away
            exit_code = stop_server(server)
            response = pending.result()
        assert response.status_code == 200, server.log_tail()
        assert response.json()["results"][0]["status"] == "ok"
        assert exit_code == 0, server.log_tail()
        assert "drained" in server.log_tail()
    finally:
        server.discard()
