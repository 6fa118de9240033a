"""A hostile client on loopback: costly requests are refused by what they cost, abandoned work stops
(between passes here; within a pass: test_abandoned_work.py), and one client's huge request does not
hold up the next one."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from live_server import start_server
from metrics_text import sample, wait_for_queue
from server_workloads import SLOW_ENGINE, heavy_trace

LIMITS = {**SLOW_ENGINE, "CCAPO_REQUEST_TIMEOUT_S": "120"}
NORMAL_WITHIN_S = 15.0  # a normal request takes well under a second; the heavy one, unstopped, tens of seconds


@pytest.fixture(scope="module")
def tiny_model_dir(smollm_model_dir: str) -> str:
    """A 49k vocabulary, as server_workloads.py's workloads are sized to its cost."""
    return smollm_model_dir


@pytest.fixture(scope="module")
def tokenizer(smollm_tokenizer: Any) -> Any:
    """The served model's tokenizer."""
    return smollm_tokenizer


@pytest.fixture(scope="module")
def server(tiny_model_dir: str) -> Iterator[str]:
    with start_server(tiny_model_dir, LIMITS) as url:
        yield url


def score(url: str, traces: list[dict[str, Any]], **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/importance", json={"traces": traces}, timeout=kwargs.pop("timeout", 60), **kwargs)


def dropped(url: str, stage: str) -> float:
    return sample(url, "ccapo_dropped_traces_total", {"stage": stage})


def assert_prompt(url: str, text_trace: dict[str, Any]) -> None:
    """A normal request is answered in its usual time, whatever else the server holds."""
    started = time.monotonic()
    response = score(url, [text_trace])
    assert response.status_code == 200, response.text[:300]
    assert time.monotonic() - started < NORMAL_WITHIN_S


def assert_prompt_and_idle(url: str, text_trace: dict[str, Any]) -> None:
    """`assert_prompt`, and nothing of the abandoned request is left in the server."""
    assert_prompt(url, text_trace)
    wait_for_queue(url, 0)
    assert sample(url, "ccapo_requests_open") == 0


def until_at_least(url: str, name: str, labels: dict[str, str], value: float, within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while sample(url, name, labels) < value:
        assert time.monotonic() < deadline, f"{name}{labels} did not reach {value} within {within_s:g} s"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("spans", "config", "fragment"),
    [
        (300, {}, "custom spans, over the limit of 256"),  # 600 one-character spans were once 600 rows
        (61, {"max_spans": 256}, "limit of 60 per trace (CCAPO_MAX_COUNTERFACTUALS_PER_TRACE); lower config.max_spans"),
    ],
)
def test_spans_beyond_the_limits_are_refused(server: str, spans: int, config: dict[str, Any], fragment: str) -> None:
    trace = heavy_trace(spans)
    response = httpx.post(f"{server}/v1/importance", json={"traces": [trace], "config": config}, timeout=60)
    assert response.status_code == 422, response.text[:300]
    error = response.json()["error"]
    assert error["type"] == "invalid_trace" and error["trace_index"] == 0
    assert fragment in error["message"]


def test_a_trace_over_its_feed_budget_is_refused_saying_what_to_reduce(server: str) -> None:
    response = score(server, [heavy_trace(words=960)])  # ~58k feed tokens, 55k per trace at most
    assert response.status_code == 422, response.text[:300]
    error = response.json()["error"]
    assert error["type"] == "invalid_trace" and error["trace_index"] == 0
    assert "over this server's limit of 55000 per trace (CCAPO_MAX_FEED_TOKENS_PER_TRACE)" in error["message"]
    assert 'config.estimator "horizon"' in error["message"] and "probe fewer spans" in error["message"]


def test_a_request_over_its_feed_budget_is_refused_saying_what_to_reduce(server: str) -> None:
    response = score(server, [heavy_trace()] * 13)  # ~48k feed tokens each, 600k per request at most
    assert response.status_code == 422, response.text[:300]
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    assert "limit of 600000 per request (CCAPO_MAX_FEED_TOKENS_PER_REQUEST); send fewer traces" in error["message"]


def test_limits_are_reported(server: str) -> None:
    limits = httpx.get(f"{server}/v1/model").json()["limits"]
    assert limits["max_counterfactuals_per_trace"] == 60
    assert limits["max_feed_tokens_per_request"] == 600000
    assert limits["server_batch_tokens"] == limits["max_batch_tokens"] == 16384


def test_a_heavy_request_past_its_deadline_stops_and_the_next_is_prompt(
    server: str, text_trace: dict[str, Any]
) -> None:
    engine_before, queue_before = dropped(server, "engine"), dropped(server, "queue")
    response = score(server, [heavy_trace()] * 8, headers={"X-Request-Timeout": "2"})
    assert response.status_code == 504
    assert_prompt_and_idle(server, text_trace)
    assert dropped(server, "engine") > engine_before  # the running batch stopped between passes
    assert dropped(server, "queue") > queue_before  # the rest left the queue unscored


def test_a_client_that_leaves_mid_batch_stops_its_work(server: str, text_trace: dict[str, Any]) -> None:
    engine_before = dropped(server, "engine")
    batches_before = sample(server, "ccapo_server_batch_tokens_count")
    body = json.dumps({"traces": [heavy_trace()] * 8}).encode()
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as client:  # a raw client, to leave at will
        head = f"POST /v1/importance HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        client.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        until_at_least(server, "ccapo_server_batch_tokens_count", {}, batches_before + 1)  # its batch runs
    assert_prompt_and_idle(server, text_trace)
    assert dropped(server, "engine") > engine_before
    assert sample(server, "ccapo_errors_total", {"type": "client_closed"}) >= 1


def test_a_normal_request_is_not_starved_by_a_heavy_one_beside_it(server: str, text_trace: dict[str, Any]) -> None:
    with ThreadPoolExecutor(2) as pool:
        heavy = pool.submit(score, server, [heavy_trace()] * 8, headers={"X-Request-Timeout": "30"})
        until_at_least(server, "ccapo_requests_open", {}, 1)
        assert_prompt(server, text_trace)
        heavy.result()


def test_slow_preparation_past_the_deadline_is_dropped(server: str, tokenizer: Any, text_trace: dict[str, Any]) -> None:
    """Ids that split characters take the slow offset path: ~seconds of tokenizer work per trace."""
    ids = tokenizer("😀" * 1000, add_special_tokens=False).input_ids[:1000]
    marker = tokenizer("\n#### 5", add_special_tokens=False).input_ids
    trace = {"prompt_ids": [1, 2, 3], "completion_ids": ids + marker}
    before = dropped(server, "preparation")
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(score, server, [trace] * 64, headers={"X-Request-Timeout": "1"})  # ~10 s to prepare
        assert_prompt(server, text_trace)
        assert slow.result().status_code == 504
    until_at_least(server, "ccapo_dropped_traces_total", {"stage": "preparation"}, before + 1)
    wait_for_queue(server, 0)


@pytest.mark.parametrize("ids", [["12", "13"], [True, 5], [1.0, 2]])
def test_token_ids_must_be_integers(server: str, ids: list[Any]) -> None:
    response = score(server, [{"prompt_ids": ids, "completion_ids": [5, 6]}])
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "invalid_request" and "traces[0].prompt_ids[0]" in error["message"]
    assert "must be an integer" in error["message"]


def test_a_queue_full_of_work_answers_429_with_retry_after(server: str, text_trace: dict[str, Any]) -> None:
    assert score(server, [text_trace]).status_code == 200  # the server has a drain rate to go by
    with ThreadPoolExecutor(1) as pool:
        filler = pool.submit(score, server, [heavy_trace()] * 12, timeout=5)  # ~590k of 600k queued tokens
        deadline = time.monotonic() + 20
        while sample(server, "ccapo_queue_tokens") < 500_000:
            assert time.monotonic() < deadline, "the heavy request was not queued"
            time.sleep(0.05)
        response = score(server, [heavy_trace()] * 3)  # 3 traces, but ~140k tokens of work: no room
        assert response.status_code == 429, response.text[:300]
        assert response.json()["error"]["type"] == "queue_full"
        assert "feed tokens" in response.json()["error"]["message"]
        assert int(response.headers["Retry-After"]) >= 1
        assert isinstance(filler.exception(), httpx.ReadTimeout)
    wait_for_queue(server, 0)
