"""Issue 22's scenario on a real server: a heavy request abandoned at its deadline stops within a decoder
layer, so the ordinary request after it waits about its own latency, not for the heavy pass in flight.

Layer by layer, the engine's stop is counted in tests/core/test_cancellation.py; this is the end-to-end
check, with margins generous enough for a busy machine.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from live_server import start_server
from metrics_text import sample
from server_workloads import SLOW_ENGINE, heavy_trace

# Long forward passes (SLOW_ENGINE's are short): the case a check between passes alone left slow.
LONG_PASSES = {**SLOW_ENGINE, "CCAPO_ENGINE_BATCH_TOKENS": "65536"}
SLACK_S = 1.0  # on top of twice the unloaded latency: a busy machine's scheduling, not the engine's work


@pytest.fixture(scope="module")
def tiny_model_dir(smollm_model_dir: str) -> str:
    """A 49k vocabulary, as server_workloads.py's workloads are sized to its cost."""
    return smollm_model_dir


@pytest.fixture(scope="module")
def server(tiny_model_dir: str) -> Iterator[str]:
    with start_server(tiny_model_dir, LONG_PASSES) as url:
        yield url


def score_s(url: str, traces: list[dict[str, Any]], **kwargs: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.post(f"{url}/v1/importance", json={"traces": traces}, timeout=120, **kwargs)
    return response, time.monotonic() - started


def test_an_ordinary_request_after_an_abandoned_heavy_one_waits_about_its_own_latency(
    server: str, text_trace: dict[str, Any]
) -> None:
    score_s(server, [text_trace])  # warm-up
    unloaded = statistics.median(score_s(server, [text_trace])[1] for _ in range(3))
    engine_dropped = sample(server, "ccapo_dropped_traces_total", {"stage": "engine"})

    heavy, _ = score_s(server, [heavy_trace(spans=40)] * 4, headers={"X-Request-Timeout": "1"})
    assert heavy.status_code == 504, heavy.text[:300]
    ordinary, waited = score_s(server, [text_trace])

    assert ordinary.status_code == 200, ordinary.text[:300]
    assert waited < 2 * unloaded + SLACK_S, f"waited {waited:.2f} s; alone it takes {unloaded:.2f} s"
    assert sample(server, "ccapo_dropped_traces_total", {"stage": "engine"}) > engine_dropped
