"""Requests share batches; a full queue answers 429, a passed deadline 504; gone requests leave the queue."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from live_server import start_server
from metrics_text import sample, wait_for_queue

MAX_WAIT_MS = 1500  # generous, so that concurrent requests surely meet in the queue
MAX_QUEUE_TRACES = 16


@pytest.fixture(scope="module")
def server(tiny_model_dir: str) -> Iterator[str]:
    env = {"CCAPO_MAX_WAIT_MS": str(MAX_WAIT_MS), "CCAPO_MAX_QUEUE_TRACES": str(MAX_QUEUE_TRACES)}
    with start_server(tiny_model_dir, env) as url:
        yield url


def score(url: str, traces: list[dict[str, Any]], **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/importance", json={"traces": traces}, timeout=kwargs.pop("timeout", 30), **kwargs)


def test_concurrent_requests_share_batches(server: str, text_trace: dict[str, Any]) -> None:
    batches_before = sample(server, "ccapo_batch_traces_count")
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda _: score(server, [text_trace]), range(16)))
    assert [r.status_code for r in responses] == [200] * 16
    assert len({str(r.json()["results"]) for r in responses}) == 1  # the same trace, the same numbers
    batches = sample(server, "ccapo_batch_traces_count") - batches_before
    assert 1 <= batches < 16
    assert sample(server, "ccapo_batch_traces_bucket", {"le": "1.0"}) < sample(server, "ccapo_batch_traces_count")
    assert all(r.json()["usage"]["queue_ms"] > 0 for r in responses)


def test_a_full_queue_answers_429_with_retry_after(server: str, text_trace: dict[str, Any]) -> None:
    with ThreadPoolExecutor(9) as pool:
        filler = pool.submit(score, server, [text_trace] * MAX_QUEUE_TRACES)
        wait_for_queue(server, MAX_QUEUE_TRACES)
        flood = list(pool.map(lambda _: score(server, [text_trace]), range(8)))
        assert filler.result().status_code == 200
    for response in flood:
        assert response.status_code == 429
        assert response.json()["error"]["type"] == "queue_full"
        assert int(response.headers["Retry-After"]) >= 1


def test_past_the_deadline_answers_504_and_drops_the_request(server: str, text_trace: dict[str, Any]) -> None:
    batches_before = sample(server, "ccapo_batch_traces_count")
    started = time.monotonic()
    response = score(server, [text_trace], headers={"X-Request-Timeout": "0.3"})
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "deadline_exceeded"
    assert time.monotonic() - started < MAX_WAIT_MS / 1000
    assert sample(server, "ccapo_queue_traces") == 0
    time.sleep(MAX_WAIT_MS / 1000 + 0.2)  # long enough for a batch to have formed, had the trace stayed
    assert sample(server, "ccapo_batch_traces_count") == batches_before


def test_a_client_that_goes_away_leaves_the_queue(server: str, text_trace: dict[str, Any]) -> None:
    with ThreadPoolExecutor(1) as pool:
        gone = pool.submit(score, server, [text_trace], timeout=0.3)
        wait_for_queue(server, 1)
        assert isinstance(gone.exception(), httpx.ReadTimeout)
    wait_for_queue(server, 0, within_s=MAX_WAIT_MS / 1000 - 0.5)  # dropped before its batch would have formed
    assert sample(server, "ccapo_errors_total", {"type": "client_closed"}) >= 1
