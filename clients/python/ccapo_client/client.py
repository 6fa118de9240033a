"""HTTP clients for the scoring server: retries, backoff and round-robin over several servers.

A request goes to the next server in turn. A connection error, 429, 502 or 503 puts that server on
hold (for its `Retry-After`, else an exponential backoff with full jitter) and the request moves on
to the next server; with one server it waits out the hold. Other errors raise at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from ccapo_client._version import __version__
from ccapo_client.errors import ApiError, RequestTimeoutError, error_from_response, retry_after
from ccapo_client.models import ModelInfo, ScoreResponse
from ccapo_client.swaps import ModelSwap, SwapState, follow, follow_async

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 502, 503})
# Connection-level failures only: a read timeout means a server has the work and is slow, and
# sending it again would add load rather than get an answer sooner.
RETRY_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)
# What a look at a swap may meet; only a server's error answer settles it (as failed).
POLL_ERRORS = (ApiError, RequestTimeoutError, ConnectionError)
# The admin's swap request, answered at once (202) while the model loads: RFC 7240's preference.
RESPOND_ASYNC = {"Prefer": "respond-async"}
# Enough concurrent requests for a trainer's worker threads; idle connections are kept for reuse.
LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=16, keepalive_expiry=30.0)

Payload = Mapping[str, Any] | Any  # a dict, or anything with pydantic's `model_dump()`


class _Servers:
    """Which server gets the next attempt, and how long it must wait first.

    Holds are shared by every request of a client, so one server's 429 also steers the client's
    other requests elsewhere until it is over.
    """

    def __init__(self, count: int, backoff: float, max_backoff: float):
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._failures = [0] * count  # consecutive, reset by a success
        self._hold_until = [0.0] * count
        self._turn = 0
        self._lock = threading.Lock()

    def pick(self, pinned: int | None = None) -> tuple[int, float]:
        """The next server in turn that is not on hold (else the one free soonest), and the wait."""
        with self._lock:
            now = time.monotonic()
            if pinned is None:
                count = len(self._failures)
                order = [(self._turn + k) % count for k in range(count)]
                pinned = min(order, key=lambda i: max(self._hold_until[i], now))  # first free one wins ties
                self._turn = pinned + 1
            return pinned, max(0.0, self._hold_until[pinned] - now)

    def failed(self, index: int, retry_after: float | None) -> float:
        with self._lock:
            self._failures[index] += 1
            ceiling = self.backoff * 2 ** min(self._failures[index] - 1, 32)
            # Full jitter spreads out clients that failed together; max_backoff also bounds a huge Retry-After.
            delay = min(retry_after if retry_after is not None else random.uniform(0, ceiling), self.max_backoff)
            self._hold_until[index] = time.monotonic() + delay
            return delay

    def succeeded(self, index: int) -> None:
        with self._lock:
            self._failures[index] = 0


class _BaseClient:
    def __init__(
        self,
        base_url: str | Sequence[str],
        api_key: str | None = None,
        admin_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
    ):
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("give at least one base URL, e.g. http://127.0.0.1:8000")
        if max_retries < 0:
            raise ValueError(f"max_retries is {max_retries}; give 0 (no retries) or more")
        self.base_urls = [url.rstrip("/") for url in urls]
        self.api_key = api_key
        self.admin_key = admin_key
        self.max_retries = max_retries
        self._servers = _Servers(len(urls), backoff, max_backoff)
        # One pooled connection set per client, reused by every request to every server.
        self._http = self._open(
            timeout=httpx.Timeout(timeout), limits=LIMITS, headers={"User-Agent": f"ccapo-client/{__version__}"}
        )

    def _open(self, **options: Any) -> Any:
        raise NotImplementedError

    def _headers(self, admin: bool = False) -> dict[str, str]:
        key = self.admin_key if admin and self.admin_key else self.api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _swap_state(self, index: int, state: dict[str, Any]) -> tuple[SwapState, str | None]:
        """A server's `GET /v1/model/swaps/{id}` answer: its state and, when failed, why."""
        error = state.get("error") or {}
        return state["status"], error and f"{self.base_urls[index]}: {error.get('message')} [{error.get('type')}]"

    def _poll_failed(self, index: int, err: Exception) -> tuple[SwapState, str | None]:
        if isinstance(err, ApiError):  # 404: the server restarted, or forgot the swap long ago
            return "failed", f"{self.base_urls[index]}: {err}"
        return "pending", None  # a server busy loading answers late: look again later

    def _timed_out(self, index: int, err: httpx.TimeoutException) -> RequestTimeoutError:
        return RequestTimeoutError(self.base_urls[index], f"no answer within the client's timeout ({err!r})")

    def _settle(self, index: int, response: httpx.Response) -> httpx.Response | None:
        """The response when it is final (raising if it is an error); None when it is worth a retry."""
        if response.status_code in RETRY_STATUSES:
            delay = self._servers.failed(index, retry_after(response))
            logger.info("%s answered %d; holding it for %.2fs", self.base_urls[index], response.status_code, delay)
            return None
        self._servers.succeeded(index)
        if response.is_error:
            raise error_from_response(response)
        return response

    def _connection_failed(self, index: int, err: httpx.TransportError) -> None:
        delay = self._servers.failed(index, None)
        logger.info("%s unreachable (%s); holding it for %.2fs", self.base_urls[index], err, delay)

    def _gave_up(self, last: httpx.Response | httpx.TransportError) -> Exception:
        if isinstance(last, httpx.Response):
            return error_from_response(last)
        servers = ", ".join(self.base_urls)
        return ConnectionError(f"no scoring server reachable at {servers} after {self.max_retries + 1} tries: {last}")


class Client(_BaseClient):
    """A synchronous client of one or several scoring servers; safe to share between threads.

    Args:
        base_url: one server's URL, or several to spread requests over.
        api_key: sent as `Authorization: Bearer` when the server requires one.
        admin_key: used instead of `api_key` for `load_model`.
        timeout: seconds per attempt (connect, read, write); a read timeout raises `RequestTimeoutError`
            (a `TimeoutError`) without a retry, since the server already has the work.
        max_retries: extra attempts after a connection error, 429, 502 or 503.
        backoff, max_backoff: first and largest backoff ceiling in seconds (also caps `Retry-After`).
    """

    _http: httpx.Client

    def _open(self, **options: Any) -> httpx.Client:
        return httpx.Client(**options)

    def score(self, traces: Sequence[Payload], config: Payload | None = None) -> ScoreResponse:
        """`POST /v1/importance`; traces and config as dicts or pydantic models (`ccapo.Trace`, ...)."""
        return ScoreResponse.model_validate(self._request("POST", "/v1/importance", _score_body(traces, config)).json())

    def model_info(self) -> ModelInfo:
        return ModelInfo.model_validate(self._request("GET", "/v1/model").json())

    def load_model(self, path: str) -> ModelInfo:
        """Load a model on every server (they serve as one scorer); returns the last one's info.

        `path` is a directory under the servers' model roots (or a hub id, where they allow it).
        """
        responses = [
            self._request("POST", "/v1/model", {"model": path}, admin=True, server=i)
            for i in range(len(self.base_urls))
        ]
        return ModelInfo.model_validate(responses[-1].json())

    def swap_model(self, path: str, wait_s: float = 30.0) -> ModelSwap:
        """Start loading `path` on every server and wait up to `wait_s` seconds for it to be live on all.

        Never blocks on a slow load: past `wait_s` the swap is "pending" (the servers keep the model
        they run meanwhile); ask again with `swap_status`. A load that fails is "failed". A request the
        servers refuse outright (bad path, wrong key, a swap already running) raises its `ApiError`.
        A server without background swaps answers once its swap is done, within `timeout`.
        """
        swap = ModelSwap(path)
        for index in range(len(self.base_urls)):
            response = self._request(
                "POST", "/v1/model", {"model": path}, admin=True, server=index, headers=RESPOND_ASYNC
            )
            if response.status_code == 202:  # its Location, relative to the URL the client was given
                swap.waiting[index] = f"/v1/model/swaps/{response.json()['id']}"
        return self.swap_status(swap, wait_s)

    def swap_status(self, swap: ModelSwap, wait_s: float = 0.0) -> ModelSwap:
        """Look again at a pending `swap` (waiting up to `wait_s` seconds); `swap` itself is updated."""
        follow(swap, self._poll_swap, wait_s)
        if swap.status == "live" and swap.model is None:
            last = len(self.base_urls) - 1
            swap.model = ModelInfo.model_validate(self._request("GET", "/v1/model", server=last).json())
        return swap

    def _poll_swap(self, swap: ModelSwap, index: int, location: str) -> tuple[SwapState, str | None]:
        try:
            return self._swap_state(index, self._request("GET", location, admin=True, server=index).json())
        except POLL_ERRORS as err:
            return self._poll_failed(index, err)

    def health(self) -> bool:
        """Whether any server is alive (`/healthz`); no retries."""
        return any(self._probe(url + "/healthz") for url in self.base_urls)

    def ready(self) -> bool:
        """Whether any server has a model loaded and takes requests (`/readyz`); no retries."""
        return any(self._probe(url + "/readyz") for url in self.base_urls)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _probe(self, url: str) -> bool:
        try:
            return self._http.get(url, headers=self._headers()).status_code == 200
        except httpx.TransportError:
            return False

    def _request(
        self, method: str, path: str, body: Any = None, *, admin: bool = False, server: int | None = None,
        headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        last: httpx.Response | httpx.TransportError | None = None
        for _ in range(self.max_retries + 1):
            index, wait = self._servers.pick(server)
            if wait:
                time.sleep(wait)
            try:
                response = self._http.request(
                    method, self.base_urls[index] + path, json=body, headers={**self._headers(admin), **(headers or {})}
                )
            except RETRY_ERRORS as err:
                self._connection_failed(index, err)
                last = err
                continue
            except httpx.TimeoutException as err:
                raise self._timed_out(index, err) from err
            if (final := self._settle(index, response)) is not None:
                return final
            last = response
        assert last is not None  # max_retries >= 0: at least one attempt was made
        raise self._gave_up(last)


class AsyncClient(_BaseClient):
    """`Client` for asyncio: the same arguments and methods, awaited."""

    _http: httpx.AsyncClient

    def _open(self, **options: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(**options)

    async def score(self, traces: Sequence[Payload], config: Payload | None = None) -> ScoreResponse:
        response = await self._request("POST", "/v1/importance", _score_body(traces, config))
        return ScoreResponse.model_validate(response.json())

    async def model_info(self) -> ModelInfo:
        return ModelInfo.model_validate((await self._request("GET", "/v1/model")).json())

    async def load_model(self, path: str) -> ModelInfo:
        """Load a checkpoint on every server (they serve as one scorer); returns the last one's info."""
        responses = [
            await self._request("POST", "/v1/model", {"model": path}, admin=True, server=i)
            for i in range(len(self.base_urls))
        ]
        return ModelInfo.model_validate(responses[-1].json())

    async def swap_model(self, path: str, wait_s: float = 30.0) -> ModelSwap:
        """`Client.swap_model`, awaited."""
        swap = ModelSwap(path)
        for index in range(len(self.base_urls)):
            response = await self._request(
                "POST", "/v1/model", {"model": path}, admin=True, server=index, headers=RESPOND_ASYNC
            )
            if response.status_code == 202:
                swap.waiting[index] = f"/v1/model/swaps/{response.json()['id']}"
        return await self.swap_status(swap, wait_s)

    async def swap_status(self, swap: ModelSwap, wait_s: float = 0.0) -> ModelSwap:
        """`Client.swap_status`, awaited."""
        await follow_async(swap, self._poll_swap, wait_s)
        if swap.status == "live" and swap.model is None:
            last = len(self.base_urls) - 1
            swap.model = ModelInfo.model_validate((await self._request("GET", "/v1/model", server=last)).json())
        return swap

    async def _poll_swap(self, swap: ModelSwap, index: int, location: str) -> tuple[SwapState, str | None]:
        try:
            return self._swap_state(index, (await self._request("GET", location, admin=True, server=index)).json())
        except POLL_ERRORS as err:
            return self._poll_failed(index, err)

    async def health(self) -> bool:
        return any([await self._probe(url + "/healthz") for url in self.base_urls])

    async def ready(self) -> bool:
        return any([await self._probe(url + "/readyz") for url in self.base_urls])

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _probe(self, url: str) -> bool:
        try:
            return (await self._http.get(url, headers=self._headers())).status_code == 200
        except httpx.TransportError:
            return False

    async def _request(
        self, method: str, path: str, body: Any = None, *, admin: bool = False, server: int | None = None,
        headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        last: httpx.Response | httpx.TransportError | None = None
        for _ in range(self.max_retries + 1):
            index, wait = self._servers.pick(server)
            if wait:
                await asyncio.sleep(wait)
            try:
                response = await self._http.request(
                    method, self.base_urls[index] + path, json=body, headers={**self._headers(admin), **(headers or {})}
                )
            except RETRY_ERRORS as err:
                self._connection_failed(index, err)
                last = err
                continue
            except httpx.TimeoutException as err:
                raise self._timed_out(index, err) from err
            if (final := self._settle(index, response)) is not None:
                return final
            last = response
        assert last is not None  # max_retries >= 0: at least one attempt was made
        raise self._gave_up(last)


def _score_body(traces: Sequence[Payload], config: Payload | None) -> dict[str, Any]:
    body: dict[str, Any] = {"traces": [_jsonable(trace) for trace in traces]}
    if config is not None:
        body["config"] = _jsonable(config)
    return body


def _jsonable(value: Payload) -> dict[str, Any]:
    """A dict as given; a pydantic model dumped to JSON types, leaving out fields that are None (the defaults)."""
    if isinstance(value, Mapping):
        return dict(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_none=True)
    raise TypeError(f"expected a dict or a pydantic model, got {type(value).__name__}")

