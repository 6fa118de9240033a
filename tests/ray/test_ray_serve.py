"""The scorer as a Ray Serve application (2 replicas on a local Ray): the single server's numbers,
errors and auth; swaps that reach every replica; a replica killed under load loses no request."""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

import httpx
import pytest
import ray
from ccapo_client import InvalidRequestError, RayScorer, UnauthorizedError
from ray_app import ADMIN_KEY, API_KEY, REPLICAS, RayApp
from result_compare import assert_close

from ccapo import Scorer, Trace
from ccapo.examples import load_examples

CONFIG = {"segmenter": "line", "weights": {"scheme": "normalized"}}
BURST = 24  # requests in the replica-death burst: bounded, sent 8 at a time


@pytest.fixture(scope="module")
def traces() -> list[dict[str, Any]]:
    return [t.model_dump(exclude_none=True) for t in load_examples()[:4]]


def local_results(model_dir: str, traces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r.to_dict() for r in Scorer.from_pretrained(model_dir).score([Trace(**t) for t in traces], CONFIG)]


def score_http(app: RayApp, traces: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(
        f"{app.url}/v1/importance", json={"traces": traces, "config": CONFIG}, headers=app.headers(), timeout=120
    )


def test_results_equal_the_library_over_http_and_the_handle(ray_app: RayApp, traces: list[dict[str, Any]]) -> None:
    assert ray_app.swap("tiny-a").status_code == 200  # whichever test ran before
    local = local_results(str(ray_app.root / "tiny-a"), traces)
    for _ in range(REPLICAS):  # Ray's router spreads these over the replicas
        response = score_http(ray_app, traces)
        assert response.status_code == 200, response.text
        assert_close(response.json()["results"], local)
    scorer = RayScorer(ray_app.handle, api_key=API_KEY)
    assert_close([r.to_dict() for r in scorer.score(traces * 3, CONFIG)], local * 3)  # split into 8 + 4


def test_bad_input_keeps_its_typed_errors(ray_app: RayApp, traces: list[dict[str, Any]]) -> None:
    url = f"{ray_app.url}/v1/importance"
    bad = [traces[0], {"prompt": "no completion"}]
    response = httpx.post(url, json={"traces": bad}, headers=ray_app.headers(), timeout=60)
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request" and response.json()["error"]["trace_index"] == 1
    response = httpx.post(url, content=b"{not json", headers={**ray_app.headers(), "content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_json"
    response = httpx.post(url, json={"traces": traces}, timeout=60)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{ray_app.url}/nowhere").json()["error"]["type"] == "not_found"
    swap = httpx.post(f"{ray_app.url}/v1/model", json={"model": "tiny-a"}, headers=ray_app.headers(), timeout=60)
    assert swap.status_code == 403 and swap.json()["error"]["type"] == "forbidden"
    outside = ray_app.swap("/etc")
    assert outside.status_code == 403 and outside.json()["error"]["type"] == "forbidden"

    scorer = RayScorer(ray_app.handle, api_key=API_KEY)
    with pytest.raises(InvalidRequestError) as caught:
        scorer.score([*traces * 3, {"prompt": "no completion"}])  # the bad one is in the second request
    assert caught.value.trace_index == 12
    with pytest.raises(UnauthorizedError):
        RayScorer(ray_app.handle, api_key="wrong").score(traces[:1])


def test_metrics_and_page_come_from_the_app(ray_app: RayApp) -> None:
    metrics = httpx.get(f"{ray_app.url}/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    versions = [line for line in metrics.text.splitlines() if line.startswith("ccapo_model_version{")]
    assert len(versions) == REPLICAS and all('replica="' in line for line in versions), versions
    assert "ccapo_ray_replica_unavailable_total" in metrics.text
    assert httpx.get(f"{ray_app.url}/healthz").json() == {"status": "alive"}
    assert httpx.get(f"{ray_app.url}/", headers={"accept": "text/html"}).status_code == 200


def dropped_traces(app: RayApp) -> float:
    """Traces dropped on every replica so far, from the application's merged /metrics."""
    lines = httpx.get(f"{app.url}/metrics").text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("ccapo_dropped_traces_total{"))


def test_a_client_that_goes_away_has_its_work_dropped_on_the_replica(ray_app: RayApp) -> None:
    steps = "".join(f"Step {k}: 12 × 11 = 132, and 132 + {k} = {132 + k}.\n" for k in range(25))
    heavy = [{"prompt": "What is 11 boxes of 12 muffins?", "completion": steps + "#### 132"}] * 8
    before = dropped_traces(ray_app)
    with pytest.raises(httpx.ReadTimeout):  # the client gives up; Serve cancels the request down to the replica
        httpx.post(
            f"{ray_app.url}/v1/importance",
            json={"traces": heavy},
            headers=ray_app.headers(),
            timeout=httpx.Timeout(60, read=0.2),
        )
    deadline = time.monotonic() + 30
    while dropped_traces(ray_app) == before:
        assert time.monotonic() < deadline, "the replica kept scoring the traces of a client that went away"
        time.sleep(0.5)


def test_a_swap_reaches_every_replica_and_a_replacement_follows_it(
    ray_app: RayApp, traces: list[dict[str, Any]]
) -> None:
    before = int(httpx.get(f"{ray_app.url}/readyz", headers=ray_app.headers()).json()["model"]["version"])
    swapped = ray_app.swap("tiny-b")
    assert swapped.status_code == 200, swapped.text
    tiny_b = str(ray_app.root / "tiny-b")
    assert swapped.json()["id"] == "tiny-b" and swapped.json()["version"] == str(before + 1)
    served = ray_app.replicas()
    assert len(served) == REPLICAS
    assert all(r["model_id"] == "tiny-b" and r["version"] == before + 1 for r in served.values()), served
    local = local_results(tiny_b, traces)
    for _ in range(REPLICAS):
        response = score_http(ray_app, traces)
        assert response.json()["model"] == {"id": "tiny-b", "version": str(before + 1)}
        assert_close(response.json()["results"], local)

    statuses = burst_while_killing_a_replica(ray_app, traces)
    assert set(statuses) <= {200, 429, 503}, statuses
    assert len(statuses) == BURST
    assert 503 in statuses  # the killed replica held requests: they were answered, typed, not lost
    ray_app.wait_ready()
    replaced = ray_app.wait_replicas(lambda now: len(now.keys() - served.keys()) == 1)
    # The replacement came up on the swapped-in model, not the one the application started with.
    assert all(r["model_id"] == "tiny-b" and r["version"] == before + 1 for r in replaced.values()), replaced
    scorer = RayScorer(ray_app.handle, api_key=API_KEY)
    assert_close([r.to_dict() for r in scorer.score(traces, CONFIG)], local)

    back = RayScorer(ray_app.handle, api_key=API_KEY, admin_key=ADMIN_KEY).load_model("tiny-a")  # policy sync
    assert back.version == str(before + 2)
    assert all(r["version"] == before + 2 for r in ray_app.replicas().values())


def burst_while_killing_a_replica(app: RayApp, traces: list[dict[str, Any]]) -> list[int]:
    """BURST scoring requests, 8 at a time, with no client retries; one replica is killed mid-burst."""
    victim = next(a for a in ray.util.list_named_actors(all_namespaces=True) if "#ScorerReplica#" in a["name"])

    def one(_: int) -> int:
        return score_http(app, traces * 2).status_code  # 8 traces: long enough to be in flight

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, i) for i in range(BURST)]
        wait(futures, timeout=300, return_when=FIRST_COMPLETED)  # by now both replicas hold requests
        ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
        return [f.result(timeout=300) for f in futures]
