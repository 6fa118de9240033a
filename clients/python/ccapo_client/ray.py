"""`RayScorer`: `RemoteScorer`'s contract through a Ray Serve deployment handle, without HTTP.

For a trainer that runs on the same Ray cluster as `ccapo serve --ray` (verl, OpenRLHF):

    from ray import serve
    scorer = RayScorer(serve.get_app_handle("ccapo"))

The handle is the application's ingress; each call is the same request the HTTP client would send
(`call_route(method, path, headers, body)`), so answers, typed errors, auth and the 429/503
retries are the HTTP client's. Ray itself is never imported here: the handle is called duck-typed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import httpx

from ccapo_client.client import Payload, _BaseClient, _score_body
from ccapo_client.errors import error_from_response
from ccapo_client.models import ModelInfo, ScoreResponse
from ccapo_client.remote import RemoteScorer
from ccapo_client.swaps import ModelSwap, SwapState, follow

# Ray's errors when a replica dies or cannot take a request; like a connection error, worth a retry.
_RAY_UNAVAILABLE = frozenset(
    {"RayActorError", "ReplicaUnavailableError", "DeploymentUnavailableError", "BackPressureError"}
)


class _HandleClient(_BaseClient):
    """`Client`'s requests, retries and errors over a deployment handle (one "server": the application)."""

    def __init__(self, handle: Any, *, timeout: float = 60.0, **options: Any):
        super().__init__([f"ray:{getattr(handle, 'deployment_name', 'handle')}"], timeout=timeout, **options)
        self.handle = handle
        self.timeout = timeout

    def _open(self, **options: Any) -> None:
        return None  # no connections: every request goes through the handle

    def score(self, traces: Sequence[Payload], config: Payload | None = None) -> ScoreResponse:
        return ScoreResponse.model_validate(self._request("POST", "/v1/importance", _score_body(traces, config)).json())

    def model_info(self) -> ModelInfo:
        return ModelInfo.model_validate(self._request("GET", "/v1/model").json())

    def load_model(self, path: str) -> ModelInfo:
        """Load a checkpoint on every replica; answers once all of them serve it."""
        return ModelInfo.model_validate(self._request("POST", "/v1/model", {"model": path}, admin=True).json())

    def swap_model(self, path: str, wait_s: float = 30.0) -> ModelSwap:
        """`load_model` that waits at most `wait_s` seconds; the call goes on in the cluster when it waits
        longer (a "pending" swap), never cancelled, and `swap_status` looks at it again."""
        headers, content = self._wire({"model": path}, admin=True)
        swap = ModelSwap(path)
        swap.waiting[0] = self.handle.call_route.remote("POST", "/v1/model", headers, content)
        return self.swap_status(swap, wait_s)

    def swap_status(self, swap: ModelSwap, wait_s: float = 0.0) -> ModelSwap:
        return follow(swap, _poll_call, wait_s)

    def close(self) -> None:
        pass

    def _wire(self, body: Any, admin: bool) -> tuple[dict[str, str], bytes]:
        headers = {"accept": "application/json", **self._headers(admin)}
        if body is None:
            return headers, b""
        headers["content-type"] = "application/json"
        return headers, json.dumps(body).encode()

    def _request(self, method: str, path: str, body: Any = None, *, admin: bool = False) -> httpx.Response:
        headers, content = self._wire(body, admin)
        last: httpx.Response | Exception | None = None
        for _ in range(self.max_retries + 1):
            _, wait = self._servers.pick(0)
            if wait:
                time.sleep(wait)
            try:
                answer = self._call(method, path, headers, content)
            except Exception as err:
                if not _unavailable(err):
                    raise
                self._servers.failed(0, None)
                last = err
                continue
            response = httpx.Response(answer["status"], headers=answer["headers"], content=answer["body"])
            if (final := self._settle(0, response)) is not None:
                return final
            last = response
        assert last is not None  # max_retries >= 0: at least one attempt was made
        if isinstance(last, httpx.Response):
            raise self._gave_up(last)
        raise ConnectionError(f"the Ray Serve application was unavailable through {self.max_retries + 1} tries: {last}")

    def _call(self, method: str, path: str, headers: dict[str, str], content: bytes) -> dict[str, Any]:
        response = self.handle.call_route.remote(method, path, headers, content)
        try:
            return response.result(timeout_s=self.timeout)
        except TimeoutError:
            response.cancel()  # the replica drops the request's queued traces
            raise


def _poll_call(swap: ModelSwap, server: int, call: Any) -> tuple[SwapState, str | None]:
    """One look at a swap's call through the handle: still running, or its answer."""
    try:
        answer = call.result(timeout_s=0)
    except TimeoutError:
        return "pending", None
    except Exception as err:  # the replica died mid-load; the scorer keeps (or restarts on) the older model
        return "failed", f"the swap call failed: {err}"
    response = httpx.Response(answer["status"], headers=answer["headers"], content=answer["body"])
    if response.is_error:
        return "failed", str(error_from_response(response))
    swap.model = ModelInfo.model_validate(response.json())
    return "live", None


def _unavailable(err: Exception) -> bool:
    return any(cls.__name__ in _RAY_UNAVAILABLE for cls in type(err).__mro__)


class RayScorer(RemoteScorer):
    """Scores traces through a Ray Serve deployment handle of `ccapo serve --ray`, as `RemoteScorer` does over HTTP.

    `score(traces, config)`, `model_info()` and `load_model(path)` (every replica loads it: policy
    sync) behave as `RemoteScorer`'s, with the same typed errors (`InvalidRequestError` with the
    caller's `trace_index`, ...), the same retries of 429 and 503 (a replica that died) and of the
    parts of a split call (`part_retries`).
    `timeout` bounds each attempt in seconds (`TimeoutError`, no retry).
    Call it from plain threads, not from inside an asyncio event loop (Ray's sync handle rule).
    """

    def __init__(
        self,
        handle: Any,
        api_key: str | None = None,
        *,
        admin_key: str | None = None,
        max_concurrency: int = 4,
        part_retries: int = 2,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
    ):
        client = _HandleClient(
            handle,
            api_key=api_key,
            admin_key=admin_key,
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            max_backoff=max_backoff,
        )
        self._attach(client, max_concurrency, part_retries)
