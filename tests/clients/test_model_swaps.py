"""`swap_model`: a model swap followed with the caller's own deadline, over real HTTP to scripted servers.

The real server's side (202, the swap's Location, pending/live/failed) is tested in
tests/server/test_auth_and_admin.py; a load slower than the client timeout end to end in
tests/integrations/test_slow_swaps.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from ccapo_client import AsyncClient, Client, RequestTimeoutError
from fake_scoring_server import MODEL_INFO, FakeServer
from starlette.requests import Request
from starlette.responses import JSONResponse

SWAPS = "/v1/model/swaps/swap-7"


def accepted() -> JSONResponse:
    return JSONResponse({"id": "swap-7", "model": "step-10", "status": "pending"}, status_code=202)


def state(status: str, **extra: object) -> JSONResponse:
    return JSONResponse({"id": "swap-7", "model": "step-10", "status": status, **extra})


def test_a_swap_is_polled_on_each_server_that_answers_202_and_is_live_once_all_are(serve):
    polled = serve(FakeServer(script=[accepted(), state("pending"), state("live", version="2")]))
    synchronous = serve()  # a server without background swaps answers once loaded, as before
    with Client([polled.url, synchronous.url], admin_key="admin") as client:
        swap = client.swap_model("step-10", wait_s=10)
    assert swap.status == "live" and swap.model is not None and swap.model.id == "step-10"
    for fake in (polled, synchronous):
        (post,) = fake.calls("/v1/model")[:1]
        assert post.headers["prefer"] == "respond-async" and post.headers["authorization"] == "Bearer admin"
    assert [s.method for s in polled.calls(SWAPS)] == ["GET", "GET"]
    assert all(s.headers["authorization"] == "Bearer admin" for s in polled.calls(SWAPS))


def test_past_the_deadline_the_swap_is_pending_and_swap_status_looks_again(serve):
    fake = serve(FakeServer(script=[accepted(), state("pending"), state("live", version="2")]))
    with Client(fake.url, admin_key="admin") as client:
        swap = client.swap_model("step-10", wait_s=0)
        assert (swap.status, swap.model, swap.error) == ("pending", None, None)
        assert client.swap_status(swap).status == "live"
    assert swap.model.model_dump() == MODEL_INFO  # what GET /v1/model answers once the swap is live
    assert [s.path for s in fake.seen] == ["/v1/model", SWAPS, SWAPS, "/v1/model"]


def test_a_load_that_fails_is_a_failed_swap_naming_the_server(serve):
    failed = state("failed", error={"type": "invalid_request", "message": "model: could not load 'step-10'"})
    fake = serve(FakeServer(script=[accepted(), failed]))
    with Client(fake.url, admin_key="admin") as client:
        swap = client.swap_model("step-10", wait_s=10)
    assert swap.status == "failed" and swap.model is None
    assert swap.error == f"{fake.url}: model: could not load 'step-10' [invalid_request]"


def test_a_forgotten_swap_is_failed_and_a_late_poll_is_still_pending(serve):
    fake = serve(FakeServer(script=[accepted()]))  # then 404 for the swap: the server restarted
    with Client(fake.url, admin_key="admin", max_retries=0) as client:
        swap = client.swap_model("step-10", wait_s=10)
    assert swap.status == "failed" and "no route" in swap.error


class SlowServer(FakeServer):
    """Answers everything after `delay_s`, as a server busy loading a model may."""

    delay_s = 1.0

    async def handle(self, request: Request) -> JSONResponse:
        await asyncio.sleep(self.delay_s)
        return await super().handle(request)


def test_a_read_timeout_is_a_typed_timeout_error_naming_the_server(serve):
    fake = serve(SlowServer())
    with Client(fake.url, timeout=0.2) as client, pytest.raises(RequestTimeoutError) as raised:
        client.model_info()
    assert isinstance(raised.value, TimeoutError) and raised.value.server == fake.url
    time.sleep(SlowServer.delay_s + 0.5)  # every request that arrived is answered (and recorded) by now
    assert len(fake.seen) == 1  # not retried: the server has the work


def test_async_client_swaps_as_the_client_does(serve):
    fake = serve(FakeServer(script=[accepted(), state("pending"), state("live", version="2")]))

    async def swap_twice():
        async with AsyncClient(fake.url, admin_key="admin") as client:
            swap = await client.swap_model("step-10", wait_s=0)
            pending = swap.status
            return pending, await client.swap_status(swap, wait_s=10)

    pending, swap = asyncio.run(swap_twice())
    assert pending == "pending" and swap.status == "live" and swap.model.id == MODEL_INFO["id"]
