"""API and admin keys; swapping the model under load loses no request and bumps the version."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from ccapo_server.model_access import startup_name
from ccapo_server.settings import ServerSettings
from live_server import spawn_server, start_server, wait_ready

from ccapo.models import DEFAULT_MODEL

API_KEY = "test-api-key"
ADMIN_KEY = "test-admin-key"
MAX_WAIT_MS = 3000  # longer than loading a tiny model on a busy machine: a request sits in the queue through a swap
AS_USER = {"Authorization": f"Bearer {API_KEY}"}
AS_ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def server(model_root: Path) -> Iterator[str]:
    env = {
        "CCAPO_API_KEY": API_KEY,
        "CCAPO_ADMIN_KEY": ADMIN_KEY,
        "CCAPO_MODEL_ROOTS": str(model_root),
        "CCAPO_MAX_WAIT_MS": str(MAX_WAIT_MS),
    }
    with start_server(str(model_root / "tiny-a"), env) as url:
        yield url


def until(condition: Callable[[], bool], within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def load(url: str, model: str, headers: dict[str, str] = AS_ADMIN) -> httpx.Response:
    return httpx.post(f"{url}/v1/model", json={"model": model}, headers=headers, timeout=60)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {API_KEY}"}])
def test_scoring_needs_the_api_key(server: str, text_trace: dict[str, Any], headers: dict[str, str]) -> None:
    for response in (
        httpx.post(f"{server}/v1/importance", json={"traces": [text_trace]}, headers=headers),
        httpx.get(f"{server}/v1/model", headers=headers),
    ):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json()["error"]["type"] == "unauthorized"


def test_the_api_key_opens_scoring_and_probes_stay_open(server: str, text_trace: dict[str, Any]) -> None:
    response = httpx.post(f"{server}/v1/importance", json={"traces": [text_trace]}, headers=AS_USER, timeout=30)
    assert response.status_code == 200
    assert httpx.get(f"{server}/v1/model", headers=AS_USER).status_code == 200
    for probe in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(f"{server}{probe}").status_code == 200


@pytest.mark.parametrize(
    ("headers", "model", "status", "error_type"),
    [
        ({}, "tiny-b", 401, "unauthorized"),
        (AS_USER, "tiny-b", 403, "forbidden"),
        (AS_ADMIN, "/etc", 403, "forbidden"),
        (AS_ADMIN, "../../etc", 403, "forbidden"),
        (AS_ADMIN, "some-org/some-model", 403, "forbidden"),
        (AS_ADMIN, "no-such-model-dir/", 422, "invalid_request"),
    ],
)
def test_loading_a_model_is_guarded(server: str, headers: dict, model: str, status: int, error_type: str) -> None:
    response = load(server, model, headers)
    assert response.status_code == status, response.text
    assert response.json()["error"]["type"] == error_type
    assert httpx.get(f"{server}/v1/model", headers=AS_USER).json()["version"] == "1"


def test_a_directory_in_a_root_that_is_no_model_is_422(server: str, model_root: Path) -> None:
    (model_root / "empty").mkdir(exist_ok=True)
    response = load(server, str(model_root / "empty"))
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request"


def test_swapping_the_model_under_load(server: str, text_trace: dict[str, Any]) -> None:
    seen: list[tuple[float, int, dict[str, Any]]] = []  # (sent at, status, body)
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(headers=AS_USER, timeout=30) as http:
            while not stop.is_set():
                sent = time.monotonic()
                response = http.post(f"{server}/v1/importance", json={"traces": [text_trace, text_trace]})
                seen.append((sent, response.status_code, response.json()))

    with ThreadPoolExecutor(4) as pool:
        clients = [pool.submit(client) for _ in range(3)]
        until(lambda: len(seen) > 0)  # the first model has answered
        swap = load(server, "tiny-b")
        swapped_at = time.monotonic()
        until(lambda: any(sent > swapped_at for sent, _, _ in seen))  # and so has the second
        stop.set()
        for c in clients:
            c.result()

    assert swap.status_code == 200, swap.text
    assert swap.json()["version"] == "2" and swap.json()["id"] == "tiny-b"  # the name asked for, not a path
    assert [status for _, status, _ in seen] == [200] * len(seen)
    versions = {body["model"]["version"] for _, _, body in seen}
    assert versions == {"1", "2"}
    assert all(body["model"]["version"] == "2" for sent, _, body in seen if sent > swapped_at)
    logprob = {body["model"]["version"]: body["results"][0]["base_logprob"] for _, _, body in seen}
    assert logprob["1"] != pytest.approx(logprob["2"])  # another model, not just another number
    assert httpx.get(f"{server}/readyz", headers=AS_USER).json()["model"]["version"] == "2"


def test_a_request_queued_during_a_swap_is_scored_by_the_new_model(server: str, text_trace: dict[str, Any]) -> None:
    before = httpx.get(f"{server}/v1/model", headers=AS_USER).json()
    target = "tiny-a" if before["id"].endswith("tiny-b") else "tiny-b"
    with ThreadPoolExecutor(2) as pool:
        swap = pool.submit(load, server, target)
        time.sleep(0.05)  # the load has begun; the request below arrives while it runs
        response = httpx.post(f"{server}/v1/importance", json={"traces": [text_trace]}, headers=AS_USER, timeout=30)
        assert swap.result().status_code == 200
    new = swap.result().json()
    assert int(new["version"]) == int(before["version"]) + 1
    assert response.status_code == 200
    assert response.json()["model"] == {"id": new["id"], "version": new["version"]}
    assert new["id"] == target


def test_a_second_load_while_one_runs_is_409(server: str) -> None:
    with ThreadPoolExecutor(2) as pool:
        statuses = sorted(r.status_code for r in pool.map(lambda _: load(server, "tiny-a"), range(2)))
    assert statuses == [200, 409]


@pytest.mark.parametrize(
    ("model", "status", "fragment"),
    [
        ("tiny\x00b", 422, "control character"),  # once a 500: "embedded null byte"
        ("nosuchdir", 422, "does not exist"),  # once "loading hub models is off"
        ("x" * 5000, 422, "cannot be a path"),
    ],
)
def test_model_names_that_cannot_load_say_why(server: str, model: str, status: int, fragment: str) -> None:
    response = load(server, model)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]["message"]


def test_a_file_linked_outside_the_roots_is_not_read(server: str, model_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "config.json"
    outside.write_text((model_root / "tiny-a" / "config.json").read_text())
    linked = model_root / "linked"
    linked.mkdir(exist_ok=True)
    for file in (model_root / "tiny-a").iterdir():
        (linked / file.name).unlink(missing_ok=True)
        (linked / file.name).symlink_to(outside if file.name == "config.json" else file)
    response = load(server, "linked")
    assert response.status_code == 403, response.text
    assert "linked/config.json links outside" in response.json()["error"]["message"]
    assert str(tmp_path) not in response.text


def test_readyz_shows_the_model_only_to_clients_with_the_key(server: str, model_root: Path) -> None:
    keyless = httpx.get(f"{server}/readyz")
    assert keyless.status_code == 200 and keyless.json() == {"status": "ready"}
    keyed = httpx.get(f"{server}/readyz", headers=AS_USER).json()
    assert keyed["model"]["id"] and str(model_root) not in keyed["model"]["id"]


def test_the_startup_model_is_named_relative_to_its_root_as_a_swapped_in_one_is(model_root: Path, tmp_path: Path):
    settings = ServerSettings(model_roots=[model_root])
    assert startup_name(str(model_root / "tiny-a"), settings) == "tiny-a"
    assert startup_name(str(tmp_path), settings) is None  # outside the roots: the operator's name stays
    assert startup_name("some-org/some-model", settings) is None and startup_name(None, settings) is None


def test_swapping_to_the_default_model_keeps_its_name(server: str) -> None:
    response = load(server, "default")
    assert response.status_code == 200, response.text
    assert response.json()["id"] == DEFAULT_MODEL  # once renamed to "default"
    assert load(server, "tiny-a").status_code == 200


RESPOND_ASYNC = {**AS_ADMIN, "Prefer": "respond-async"}


def follow_swap(url: str, location: str) -> dict[str, Any]:
    """Poll a swap's Location until it is no longer pending; its last state."""
    states: list[dict[str, Any]] = []

    def settled() -> bool:
        states.append(httpx.get(f"{url}{location}", headers=AS_ADMIN).json())
        return states[-1]["status"] != "pending"

    until(settled)
    return states[-1]


def test_prefer_respond_async_answers_202_and_the_swap_is_polled_until_live(server: str) -> None:
    before = httpx.get(f"{server}/v1/model", headers=AS_USER).json()
    target = "tiny-a" if before["id"].endswith("tiny-b") else "tiny-b"
    response = httpx.post(f"{server}/v1/model", json={"model": target}, headers=RESPOND_ASYNC)
    assert response.status_code == 202, response.text
    assert response.headers["Preference-Applied"] == "respond-async"
    swap = response.json()
    assert swap["status"] == "pending" and swap["model"] == target
    assert response.headers["Location"] == f"/v1/model/swaps/{swap['id']}"
    live = follow_swap(server, response.headers["Location"])
    now = httpx.get(f"{server}/v1/model", headers=AS_USER).json()
    assert live == {"id": swap["id"], "model": target, "status": "live", "version": now["version"]}
    assert now["id"] == target and int(now["version"]) == int(before["version"]) + 1


def test_a_background_swap_that_cannot_load_is_failed_and_the_old_model_serves(server: str, model_root: Path) -> None:
    before = httpx.get(f"{server}/v1/model", headers=AS_USER).json()
    (model_root / "empty").mkdir(exist_ok=True)
    response = httpx.post(f"{server}/v1/model", json={"model": "empty"}, headers=RESPOND_ASYNC)
    assert response.status_code == 202, response.text
    failed = follow_swap(server, response.headers["Location"])
    assert failed["status"] == "failed" and failed["error"]["type"] == "invalid_request"
    assert "could not load 'empty'" in failed["error"]["message"] and str(model_root) not in failed["error"]["message"]
    assert httpx.get(f"{server}/v1/model", headers=AS_USER).json() == before


@pytest.mark.parametrize(("model", "status"), [("nosuchdir", 422), ("/etc", 403)])
def test_a_background_swap_is_refused_at_once_for_a_name_it_cannot_load(server: str, model: str, status: int) -> None:
    response = httpx.post(f"{server}/v1/model", json={"model": model}, headers=RESPOND_ASYNC)
    assert response.status_code == status, response.text


def test_swaps_are_admin_routes_and_unknown_ones_are_404(server: str) -> None:
    assert httpx.get(f"{server}/v1/model/swaps/swap-1").status_code == 401
    assert httpx.get(f"{server}/v1/model/swaps/swap-1", headers=AS_USER).status_code == 403
    missing = httpx.get(f"{server}/v1/model/swaps/nope", headers=AS_ADMIN)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"


def test_the_swap_routes_document_their_statuses(server: str) -> None:
    paths = httpx.get(f"{server}/openapi.json").json()["paths"]
    assert {"200", "202", "409"} <= set(paths["/v1/model"]["post"]["responses"])
    assert {"200", "401", "403", "404"} <= set(paths["/v1/model/swaps/{swap_id}"]["get"]["responses"])


def test_a_slow_load_is_pending_while_the_old_model_scores_and_a_second_swap_is_409(
    model_root: Path, text_trace: dict[str, Any]
) -> None:
    env = {"CCAPO_API_KEY": API_KEY, "CCAPO_ADMIN_KEY": ADMIN_KEY, "CCAPO_MODEL_ROOTS": str(model_root)}
    server = spawn_server(str(model_root / "tiny-a"), env, load_delay_s=3.0)
    try:
        wait_ready(server)
        url = server.url
        response = httpx.post(f"{url}/v1/model", json={"model": "tiny-b"}, headers=RESPOND_ASYNC, timeout=1.0)
        assert response.status_code == 202  # within a client timeout shorter than the load
        again = httpx.post(f"{url}/v1/model", json={"model": "tiny-a"}, headers=RESPOND_ASYNC)
        assert again.status_code == 409 and again.json()["error"]["type"] == "conflict"
        scored = httpx.post(f"{url}/v1/importance", json={"traces": [text_trace]}, headers=AS_USER, timeout=30)
        assert scored.json()["model"]["version"] == "1"  # the old model serves meanwhile
        assert httpx.get(f"{url}{response.headers['Location']}", headers=AS_ADMIN).json()["status"] == "pending"
        assert follow_swap(url, response.headers["Location"])["version"] == "2"
    finally:
        server.discard()
