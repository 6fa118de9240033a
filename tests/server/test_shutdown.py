"""SIGTERM: the server stops admitting, answers what fits in its grace period, answers the rest with
a JSON 503, exits 0 within its limits, and logs how every request ended."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from ccapo_server.errors import ApiError
from ccapo_server.metrics import Metrics
from ccapo_server.scheduler import Scheduler
from ccapo_server.settings import ServerSettings
from live_server import spawn_server, stop_server, wait_ready
from metrics_text import sample, wait_for_queue
from server_workloads import SLOW_ENGINE, heavy_trace

from ccapo import Scorer, ScoringConfig, Trace

GRACE_S = 2
SHUTDOWN_TIMEOUT_S = 5


@pytest.fixture(scope="module")
def tiny_model_dir(smollm_model_dir: str) -> str:
    """A 49k vocabulary, as server_workloads.py's workloads are sized to its cost."""
    return smollm_model_dir


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
        assert "of 1 requests in flight at shutdown, 1 were answered with results, 0 got 503" in server.log_tail()
    finally:
        server.discard()


def test_what_outlives_the_grace_period_gets_a_json_503(tiny_model_dir: str) -> None:
    env = {
        **SLOW_ENGINE,
        "CCAPO_MAX_QUEUE_TOKENS": "2000000",  # room for all ten: none may be turned away with a 429
        "CCAPO_GRACEFUL_TIMEOUT_S": str(GRACE_S),
        "CCAPO_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S),
    }
    server = spawn_server(tiny_model_dir, env)
    try:
        wait_ready(server)
        body = {"traces": [heavy_trace()] * 2}  # seconds of engine work each: ten of them outlast the grace
        with ThreadPoolExecutor(10) as pool:
            pending = [pool.submit(httpx.post, f"{server.url}/v1/importance", json=body, timeout=60) for _ in range(10)]
            deadline = time.monotonic() + 20
            while sample(server.url, "ccapo_requests_open") < 10:
                assert time.monotonic() < deadline, server.log_tail()
                time.sleep(0.05)
            signalled = time.monotonic()
            exit_code = stop_server(server)
            stopped_in = time.monotonic() - signalled
            responses = [p.result() for p in pending]
        assert exit_code == 0, server.log_tail()
        assert stopped_in < GRACE_S + 2 * SHUTDOWN_TIMEOUT_S, server.log_tail()
        answered = [r for r in responses if r.status_code == 200]
        shut_out = [r for r in responses if r.status_code == 503]
        assert len(answered) + len(shut_out) == 10, [r.text[:200] for r in responses]  # never a plain-text 500
        assert shut_out, "every request fit in the grace period: the test's work is too light"
        for response in shut_out:
            assert response.json()["error"]["type"] == "shutting_down"
            assert int(response.headers["Retry-After"]) >= 1
        truth = (
            f"of 10 requests in flight at shutdown, {len(answered)} were answered with results, {len(shut_out)} got 503"
        )
        assert truth in server.log_tail(), server.log_tail()
    finally:
        server.discard()


def test_once_shutdown_begins_new_requests_get_503_with_retry_after(llama: Any, tokenizer: Any) -> None:
    """In-process: over HTTP, uvicorn closes its listener at SIGTERM, so no new request arrives to see this
    (a host that drives the app itself, such as a Ray replica, does send them)."""

    async def run() -> None:
        settings = ServerSettings(graceful_timeout_s=1, shutdown_timeout_s=1)
        scheduler = Scheduler(Scorer(llama, tokenizer), "tiny", settings, Metrics())
        scheduler.start()
        scheduler.begin_shutdown()
        with pytest.raises(ApiError) as refused:
            scheduler.submit([Trace(prompt="Q", completion="1 + 1 = 2.\n#### 2")], ScoringConfig(), timeout_s=10)
        assert (refused.value.status, refused.value.type) == (503, "shutting_down")
        assert refused.value.retry_after is not None and refused.value.retry_after >= 1
        await scheduler.stop()

    asyncio.run(run())
