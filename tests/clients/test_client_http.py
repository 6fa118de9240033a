"""`Client` and `AsyncClient` against real HTTP servers: retries, Retry-After, backoff, round-robin, errors."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from ccapo_client import (
    AsyncClient,
    Client,
    InvalidRequestError,
    NotReadyError,
    QueueFullError,
    RemoteScorer,
    UnauthorizedError,
)
from fake_scoring_server import FakeServer, error, free_port, result_for
from pydantic import BaseModel

TRACES = [
    {"prompt": "2 + 3?", "completion": "2 + 3 = 5.\n#### 5"},
    {"prompt": "4 + 4?", "completion": "4 + 4 = 8.\n#### 8"},
]
FAST = {"backoff": 0.01, "max_backoff": 0.05}  # retries without real waiting, where waiting is not the point


def test_429_with_retry_after_is_waited_out_then_succeeds(serve):
    fake = serve(FakeServer(script=[error(429, "queue_full", "queue full", **{"Retry-After": "1"}) for _ in range(2)]))
    with Client(fake.url) as client:
        started = time.monotonic()
        response = client.score(TRACES)
        elapsed = time.monotonic() - started
    calls = fake.calls("/v1/importance")
    assert len(calls) == 3
    gaps = [b.at - a.at for a, b in itertools.pairwise(calls)]
    assert all(0.95 <= gap < 1.5 for gap in gaps), gaps
    assert elapsed < 3.5
    assert [r.completion for r in response.results] == [t["completion"] for t in TRACES]


def test_503_without_retry_after_backs_off_then_succeeds(serve):
    fake = serve(FakeServer(script=[error(503, "not_ready", "loading a model")]))
    with Client(fake.url, backoff=0.2) as client:
        assert client.score(TRACES).usage.traces == 2
    first, second = fake.calls("/v1/importance")
    assert second.at - first.at < 0.5  # full jitter: somewhere in [0, backoff]


def test_backoff_is_capped_by_max_backoff(serve):
    fake = serve(FakeServer(script=[error(502, "bad_gateway", "proxy") for _ in range(4)]))
    with Client(fake.url, backoff=30.0, max_backoff=0.05) as client:
        started = time.monotonic()
        client.score(TRACES)
    assert len(fake.calls("/v1/importance")) == 5
    assert time.monotonic() - started < 1.0


def test_retries_run_out_with_the_typed_error(serve):
    fake = serve(FakeServer(script=[error(503, "not_ready", "loading") for _ in range(10)]))
    with Client(fake.url, max_retries=2, **FAST) as client, pytest.raises(NotReadyError) as info:
        client.score(TRACES)
    assert len(fake.seen) == 3
    assert info.value.status == 503
    assert info.value.type == "not_ready"


def test_422_is_not_retried_and_names_the_trace(serve):
    message = "trace 1: completion_ids[3] = 99999 is outside the model's vocabulary"
    fake = serve(FakeServer(script=[error(422, "invalid_trace", message, trace_index=1)]))
    with Client(fake.url, **FAST) as client, pytest.raises(InvalidRequestError) as info:
        client.score(TRACES)
    assert len(fake.seen) == 1
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.status, err.type, err.trace_index) == (422, "invalid_trace", 1)
    assert str(err).startswith("trace 1: completion_ids[3]")  # the index is stated once


def test_401_raises_unauthorized_and_the_key_is_sent(serve):
    fake = serve(FakeServer(script=[error(401, "unauthorized", "missing or wrong API key")]))
    with Client(fake.url, api_key="secret", **FAST) as client:
        with pytest.raises(UnauthorizedError):
            client.score(TRACES)
        client.score(TRACES)
    assert len(fake.seen) == 2
    assert all(s.headers["authorization"] == "Bearer secret" for s in fake.seen)


def test_round_robin_spreads_requests_evenly(serve):
    a, b = serve(), serve()
    with Client([a.url, b.url]) as client:
        for _ in range(6):
            client.score(TRACES[:1])
    assert len(a.seen) == len(b.seen) == 3


def test_a_server_down_is_skipped(serve):
    live = serve()
    with Client([f"http://127.0.0.1:{free_port()}", live.url], **FAST) as client:
        for _ in range(6):
            assert len(client.score(TRACES).results) == 2
    assert len(live.seen) == 6


def test_a_retryable_status_moves_on_to_the_next_server_at_once(serve):
    busy = serve(FakeServer(script=[error(429, "queue_full", "full", **{"Retry-After": "30"})]))
    idle = serve()
    with Client([busy.url, idle.url]) as client:
        started = time.monotonic()
        client.score(TRACES)
        client.score(TRACES)  # `busy` is still on hold for its Retry-After, so this goes to `idle` too
    assert time.monotonic() - started < 1.0
    assert (len(busy.seen), len(idle.seen)) == (1, 2)


def test_no_server_reachable_raises_connection_error():
    with Client(f"http://127.0.0.1:{free_port()}", max_retries=2, **FAST) as client:
        with pytest.raises(ConnectionError, match="after 3 tries"):
            client.score(TRACES)
        assert not client.health()


def test_pydantic_traces_and_config_are_sent_as_json(serve):
    class Trace(BaseModel):  # stands in for ccapo.Trace: None fields are left out, tuples become lists
        prompt: str
        completion: str
        spans: list[tuple[int, int]] | None = None
        reference_answer: str | None = None

    class Config(BaseModel):
        intervention: str = "delete"
        max_spans: int = 10

    fake = serve()
    with Client(fake.url) as client:
        client.score([Trace(prompt="p", completion="a b", spans=[(0, 1)])], Config(intervention="pad"))
    assert fake.seen[0].body == {
        "traces": [{"prompt": "p", "completion": "a b", "spans": [[0, 1]]}],
        "config": {"intervention": "pad", "max_spans": 10},
    }


def test_model_routes_health_and_ready(serve):
    a, b = serve(), serve()
    with Client([a.url, b.url], api_key="user", admin_key="admin") as client:
        assert client.health() and client.ready()
        info = client.model_info()
        assert (info.id, info.limits["max_traces_per_request"]) == ("fake", 64)
        loaded = client.load_model("/ckpt/step-10")
    assert (loaded.id, loaded.version) == ("/ckpt/step-10", "2")
    for fake in (a, b):  # every server loads the checkpoint, with the admin key
        (post,) = [s for s in fake.seen if s.method == "POST"]
        assert post.body == {"model": "/ckpt/step-10"}
        assert post.headers["authorization"] == "Bearer admin"


def test_unknown_fields_are_ignored_and_to_dict_returns_what_was_sent(serve):
    fake = serve()
    with Client(fake.url) as client:
        result = client.score(TRACES[:1]).results[0]
    assert result.to_dict() == result_for(TRACES[0])
    assert result.ok and result.spans[0].drop == 0.5
    assert type(result).model_validate({**result.to_dict(), "new_field": 1}).to_dict() == result.to_dict()


def test_async_client_retries_round_robins_and_raises(serve):
    queued = serve(FakeServer(script=[error(429, "queue_full", "full", **{"Retry-After": "1"})]))
    other = serve()

    async def main() -> None:
        async with AsyncClient(queued.url) as client:
            started = time.monotonic()
            response = await client.score(TRACES)
            assert 0.95 <= time.monotonic() - started < 2.5
            assert len(response.results) == 2
        async with AsyncClient([queued.url, other.url]) as client:
            await asyncio.gather(*(client.score(TRACES) for _ in range(4)))
            assert await client.ready()
            assert (await client.model_info()).version == "1"
        queued.script.append(error(422, "invalid_request", "traces[0].prompt: Field required", trace_index=0))
        async with AsyncClient(queued.url, **FAST) as client:
            with pytest.raises(InvalidRequestError) as info:
                await client.score(TRACES)
            assert info.value.trace_index == 0
        queued.script.append(error(429, "queue_full", "full"))
        async with AsyncClient(queued.url, max_retries=0) as client:
            with pytest.raises(QueueFullError):
                await client.score(TRACES)

    asyncio.run(main())
    assert len(queued.calls("/v1/importance")) == 2 + 2 + 1 + 1
    assert len(other.calls("/v1/importance")) == 2


def test_remote_scorer_splits_by_the_server_limit_and_rebases_trace_index(serve):
    fake = serve()
    fake.model_info["limits"] = {"max_traces_per_request": 2}
    traces = [{"prompt": "q", "completion": f"step {i}\n#### {i}"} for i in range(5)]
    with RemoteScorer(fake.url) as scorer:
        results = scorer.score(traces)
        assert [r.completion for r in results] == [t["completion"] for t in traces]
        assert sorted(len(s.body["traces"]) for s in fake.calls("/v1/importance")) == [1, 2, 2]
        assert len(fake.calls("/v1/model")) == 1
        assert scorer.last_model_version == "1"

        traces[3] = {**traces[3], "bad": True}  # the second part's trace 1 is the caller's trace 3
        with pytest.raises(ValueError, match=r"^trace 3: spans overlap") as info:
            scorer.score(traces)
        assert info.value.trace_index == 3
        assert scorer.score([]) == []
        assert len(fake.calls("/v1/model")) == 1  # the limits are fetched once
