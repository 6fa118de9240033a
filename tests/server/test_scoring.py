"""The server's numbers are the library's numbers; health, readiness, model info and docs answer."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from result_compare import assert_close

from ccapo import Scorer, Trace
from ccapo.examples import load_examples

CONFIGS: list[dict[str, Any]] = [
    {},
    {"intervention": "pad"},
    {"intervention": "attention", "segmenter": "line", "weights": {"scheme": "normalized"}},
    {"segmenter": "sentence", "target": "reference", "weights": {"scheme": "paper", "conservation": True}},
]


@pytest.fixture(scope="module")
def scorer(tiny_model_dir: str) -> Scorer:
    return Scorer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def traces(scorer: Scorer, text_trace: dict[str, Any]) -> list[dict[str, Any]]:
    """Text traces, token-id traces (one with custom token spans) and an unscorable one."""
    texts = [t.model_dump(exclude_none=True) for t in load_examples()[:3]]
    tok = scorer.tokenizer
    ids = [
        {
            "prompt_ids": tok(t["prompt"]).input_ids,
            "completion_ids": [*tok(t["completion"], add_special_tokens=False).input_ids, tok.eos_token_id],
            "reference_answer": t["reference_answer"],
        }
        for t in texts[:2]
    ]
    ids[1]["spans"] = [[0, 4], [6, 9]]
    no_answer = {**text_trace, "completion": "I am not sure.", "reference_answer": "132"}
    return [*texts, *ids, no_answer]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_results_match_the_library(open_server: str, scorer: Scorer, traces: list[dict], config: dict) -> None:
    response = httpx.post(f"{open_server}/v1/importance", json={"traces": traces, "config": config}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    local = [r.to_dict() for r in scorer.score([Trace(**t) for t in traces], config)]
    assert_close(body["results"], local)
    assert sum(r["status"] == "ok" for r in body["results"]) >= 4
    assert body["model"] == {"id": scorer.model_id, "version": "1"}
    usage = body["usage"]
    assert usage["traces"] == len(traces)
    assert usage["counterfactuals"] == sum(len(r["spans"]) for r in local)
    assert usage["forward_tokens"] > 0 and usage["compute_ms"] > 0 and usage["queue_ms"] >= 0


def test_health_and_readiness(open_server: str, tiny_model_dir: str) -> None:
    assert httpx.get(f"{open_server}/healthz").json() == {"status": "alive"}
    ready = httpx.get(f"{open_server}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model": {"id": tiny_model_dir, "version": "1"}}


def test_model_info_without_a_key_when_none_is_set(
    open_server: str, tiny_model_dir: str, open_limits: dict[str, int]
) -> None:
    info = httpx.get(f"{open_server}/v1/model").json()
    assert info["id"] == tiny_model_dir and info["version"] == "1"
    assert info["device"] == "cpu" and info["dtype"] == "float32" and info["context_length"] == 1024
    assert info["limits"] == {
        **open_limits,
        "max_counterfactuals_per_trace": 64,
        "max_feed_tokens_per_trace": 131072,
        "max_feed_tokens_per_request": 131072,
        "server_batch_tokens": 16384,
        "max_batch_tokens": 16384,  # server_batch_tokens's deprecated name
        "max_wait_ms": 10.0,
        "max_queue_traces": 256,
        "max_queue_tokens": 262144,
    }


def test_admin_route_is_absent_without_an_admin_key(open_server: str) -> None:
    for key in (None, "anything"):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = httpx.post(f"{open_server}/v1/model", json={"model": "tiny-b"}, headers=headers)
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found"


def test_openapi_documents_the_routes_with_examples(open_server: str) -> None:
    spec = httpx.get(f"{open_server}/openapi.json").json()
    assert {"/v1/importance", "/v1/model", "/healthz", "/readyz", "/metrics"} <= spec["paths"].keys()
    importance = spec["paths"]["/v1/importance"]["post"]
    examples = importance["requestBody"]["content"]["application/json"]["examples"]
    assert {"text", "token_ids"} <= examples.keys()
    assert "prompt_ids" in examples["token_ids"]["value"]["traces"][0]
    assert importance["responses"]["200"]["content"]["application/json"]["example"]["results"]
    assert "post" not in spec["paths"]["/v1/model"]  # admin routes are off here
    docs = httpx.get(f"{open_server}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_metrics_are_prometheus_text(open_server: str, text_trace: dict[str, Any]) -> None:
    httpx.post(f"{open_server}/v1/importance", json={"traces": [text_trace]}, timeout=30).raise_for_status()
    text = httpx.get(f"{open_server}/metrics").text
    for name in (
        "ccapo_requests_total",
        "ccapo_request_seconds",
        "ccapo_queue_seconds",
        "ccapo_batch_traces",
        "ccapo_server_batch_tokens",
        "ccapo_queue_traces",
        "ccapo_queue_tokens",
        "ccapo_requests_open",
        "ccapo_model_version 1.0",
    ):
        assert name in text
    assert 'ccapo_requests_total{method="POST",route="/v1/importance",status="200"}' in text
