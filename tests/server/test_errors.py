"""Malformed requests get typed 4xx bodies naming what to fix, and never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

# name, request kwargs, status, error type, trace_index, a fragment of the message
Case = tuple[str, dict[str, Any], int, str, int | None, str]


def json_body(body: Any) -> dict[str, Any]:
    return {"json": body}


def cases(trace: dict[str, Any], limits: dict[str, int]) -> list[Case]:
    long_ids = {"prompt_ids": [1] * 10, "completion_ids": [5] * limits["max_tokens_per_trace"]}
    odd_chat = {**trace, "prompt": [{"role": "user", "content": {}}]}
    long_text = {**trace, "completion": "Each box holds 12 muffins. " * 60 + "\n#### 132"}
    return [
        ("malformed json", {"content": b'{"traces": [', "headers": {"Content-Type": "application/json"}},
         400, "invalid_json", None, "not valid JSON"),
        ("not json content type", {"content": b'{"traces": []}', "headers": {"Content-Type": "text/plain"}},
         400, "invalid_json", None, "application/json"),
        ("traces not a list", json_body({"traces": "x"}), 422, "invalid_request", None, "traces"),
        ("ids not ints", json_body({"traces": [trace, {"prompt_ids": ["a"], "completion_ids": [1]}]}),
         422, "invalid_request", 1, "traces[1].prompt_ids[0]"),
        ("config value of wrong type", json_body({"traces": [trace], "config": {"max_spans": "many"}}),
         422, "invalid_request", None, "config.max_spans"),
        ("empty traces", json_body({"traces": []}), 422, "invalid_request", None, "traces"),
        ("no traces field", json_body({"config": {}}), 422, "invalid_request", None, "traces: Field required"),
        ("trace without completion", json_body({"traces": [{"prompt": "hi"}]}),
         422, "invalid_request", 0, "needs both prompt and completion"),
        ("unknown intervention", json_body({"traces": [trace], "config": {"intervention": "zap"}}),
         422, "invalid_request", None, "config.intervention"),
        ("unknown weight scheme", json_body({"traces": [trace], "config": {"weights": {"scheme": "bogus"}}}),
         422, "invalid_request", None, "config.weights.scheme"),
        ("unknown trace field", json_body({"traces": [trace, {**trace, "foo": 1}]}),
         422, "invalid_request", 1, "traces[1].foo"),
        ("unknown top-level field", json_body({"traces": [trace], "extra": 1}), 422, "invalid_request", None, "extra"),
        ("unknown config field", json_body({"traces": [trace], "config": {"speed": 1}}),
         422, "invalid_request", None, "config.speed"),
        ("empty span", json_body({"traces": [trace, {**trace, "spans": [[5, 2]]}]}),
         422, "invalid_trace", 1, "empty"),
        ("overlapping spans", json_body({"traces": [{**trace, "spans": [[0, 10], [5, 20]]}]}),
         422, "invalid_trace", 0, "overlap"),
        ("chat content not text", json_body({"traces": [trace, odd_chat]}),
         422, "invalid_request", 1, "chat prompt"),
        ("no chat messages", json_body({"traces": [{**trace, "prompt": []}]}), 422, "invalid_request", 0, "non-empty"),
        ("multi-token placeholder", json_body({"traces": [trace], "config": {"placeholder": "two words"}}),
         422, "invalid_request", None, "config.placeholder"),
        ("infinite weight setting", {"content": b'{"traces": [], "config": {"weights": {"base_importance": Infinity}}}',
                                     "headers": {"Content-Type": "application/json"}},
         422, "invalid_request", None, "config.weights.base_importance"),
        ("id out of vocabulary", json_body({"traces": [{"prompt_ids": [1, 2], "completion_ids": [5, 10**7]}]}),
         422, "invalid_trace", 0, "vocabulary"),
        ("too many ids", json_body({"traces": [trace, long_ids]}), 422, "invalid_trace", 1, "limit"),
        ("too many text tokens", json_body({"traces": [long_text]}), 422, "invalid_trace", 0, "limit"),
        ("too many traces", json_body({"traces": [trace] * (limits["max_traces_per_request"] + 1)}),
         422, "invalid_request", None, f"limit of {limits['max_traces_per_request']}"),
        ("bad timeout header", {**json_body({"traces": [trace]}), "headers": {"X-Request-Timeout": "soon"}},
         422, "invalid_request", None, "x-request-timeout"),
        ("oversized body", {"content": b"x" * (limits["max_body_bytes"] + 1)},
         413, "payload_too_large", None, "limit"),
    ]  # fmt: skip


def test_every_malformed_request_gets_a_typed_4xx(
    open_server: str, text_trace: dict[str, Any], open_limits: dict[str, int]
) -> None:
    for name, kwargs, status, error_type, trace_index, fragment in cases(text_trace, open_limits):
        response = httpx.post(f"{open_server}/v1/importance", timeout=30, **kwargs)
        assert response.status_code == status, (name, response.text)
        body = response.json()
        assert body.keys() == {"error"}, name
        error = body["error"]
        assert error["type"] == error_type, (name, error)
        assert error.get("trace_index") == trace_index, (name, error)
        assert fragment in error["message"], (name, error)
    metrics = httpx.get(f"{open_server}/metrics").text
    assert 'status="500"' not in metrics
    assert 'ccapo_errors_total{type="invalid_trace"}' in metrics


def test_a_streamed_body_over_the_limit_is_413(open_server: str, open_limits: dict[str, int]) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count what arrives
        for _ in range(4):
            yield b" " * (open_limits["max_body_bytes"] // 2)

    response = httpx.post(f"{open_server}/v1/importance", content=chunks(), timeout=30)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "payload_too_large"


@pytest.mark.parametrize(("method", "path", "status", "error_type"), [
    ("GET", "/v2/nothing", 404, "not_found"),
    ("GET", "/v1/importance", 405, "method_not_allowed"),
])  # fmt: skip
def test_unknown_routes_and_methods(open_server: str, method: str, path: str, status: int, error_type: str) -> None:
    response = httpx.request(method, f"{open_server}{path}")
    assert response.status_code == status
    assert response.json()["error"]["type"] == error_type

