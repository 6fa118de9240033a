"""The Ray Serve ingress: forwards every request to a model replica and adds only what one replica cannot know.

- A replica that dies (or cannot be reached) while it holds a request: a typed 503 with
  Retry-After instead of Ray's own 500, so clients retry.
- `POST /v1/model`: put the model in service on one replica (through its app: auth, model roots,
  errors), commit it to the registry, and answer once every replica serves it; with
  `Prefer: respond-async`, 202 at once and the swap polled at `GET /v1/model/swaps/{id}`.
- `GET /readyz`: ready only when every replica serves the registry's model version.
- `GET /metrics`: every replica's metrics, labelled `replica` (see ray_metrics).

HTTP requests arrive through Ray Serve's proxy (`__call__`); in-cluster callers such as
`ccapo_client.RayScorer` use `call_route` through a deployment handle, with the same answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from typing import Any

from fastapi.security import HTTPAuthorizationCredentials
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import ValidationError
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

try:  # newer Ray (2.60 here) raises it for a replica that died mid-request; Ray 2.55 raises RayActorError
    from ray.serve.exceptions import ReplicaUnavailableError
except ImportError:
    ReplicaUnavailableError = RayActorError
from starlette.requests import Request
from starlette.responses import Response

from ccapo_server.auth import admin_key_guard
from ccapo_server.errors import ApiError, error_response
from ccapo_server.ray_asgi import WireRequest, WireResponse
from ccapo_server.ray_metrics import IngressMetrics, render
from ccapo_server.schemas import LoadModelRequest
from ccapo_server.settings import ServerSettings
from ccapo_server.swaps import SWAPS_PATH, Swaps, prefers_async

logger = logging.getLogger("ccapo_server.ray")

SWAP_WAIT_S = 600.0  # how long POST /v1/model waits for every replica to load the model
_SWAP_POLL_S = 0.2
_DEADLINE_MARGIN_S = 5.0
_PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"
_REPLICA_GONE = (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError)


class ScorerIngress:
    def __init__(self, model: Any, registry: Any, settings: ServerSettings, replicas: int):
        self._model = model  # handle of the ScorerReplica deployment
        self._registry = registry
        self._replicas = replicas
        self._admin_guard = admin_key_guard(settings.admin_key)
        self._metrics = IngressMetrics()
        self._swaps = Swaps()  # swaps started with Prefer: respond-async (the ingress has one replica)
        # A request waits in Ray's router while no replica can take it (all dead and restarting):
        # past the server's own deadline, plus a margin so a replica's own 504 comes first, it ends.
        self._deadline_s = settings.request_timeout_s + _DEADLINE_MARGIN_S

    async def __call__(self, request: Request) -> Response:
        wire = WireRequest(
            method=request.method,
            path=request.url.path,
            query=request.url.query.encode(),
            headers=list(request.headers.raw),
            body=await request.body(),
        )
        answer = await self.dispatch(wire)
        response = Response(answer.body, status_code=answer.status)
        response.raw_headers = answer.headers  # as the replica's app set them (content-length included)
        return response

    async def call_route(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"", query: str = ""
    ) -> dict[str, Any]:
        """One request without HTTP, for a deployment handle: `{"status", "headers", "body"}`."""
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
        wire = WireRequest(method.upper(), path, query.encode(), raw, body)
        return (await self.dispatch(wire)).as_dict()

    async def dispatch(self, request: WireRequest) -> WireResponse:
        try:
            if request.method == "POST" and request.path == "/v1/model":
                if prefers_async(request.header("prefer")):
                    return await self._swap_in_background(request)
                return await self._swap(request)
            if request.method == "GET" and request.path.startswith(SWAPS_PATH):
                return await self._swap_status(request)
            if request.method == "GET" and request.path == "/readyz":
                state = await self._readiness()
                if not state["ready"]:
                    raise ApiError("not_ready", f"{state['message']}; retry shortly", retry_after=1)
            if request.method == "GET" and request.path == "/metrics":
                texts = await self._registry.metrics.remote()
                return WireResponse(200, [(b"content-type", _PROMETHEUS)], render(texts, self._metrics))
            return await self._on_replica(self._model.handle, request, self._deadline_s)
        except ApiError as err:
            return _wire(err)
        except Exception:
            logger.exception("unhandled error on %s %s", request.method, request.path)
            return _wire(ApiError("internal", "internal server error; the server log has the details"))

    async def _readiness(self) -> dict[str, Any]:
        """The registry's view (which version each replica serves), checked against Ray's (which
        replicas run): a replica that just died still looks current to the registry for a few seconds."""
        state = await self._registry.readiness.remote(self._replicas)
        status = await asyncio.to_thread(serve.status)  # a blocking call to Serve's controller
        app = status.applications.get(self._model.app_name)
        deployment = app.deployments.get(self._model.deployment_name) if app else None
        running = deployment.replica_states.get("RUNNING", 0) if deployment else 0
        if running < self._replicas:
            state["ready"] = False
            state["message"] = f"{running} of {self._replicas} replicas are running; Ray is starting the others"
        return state

    async def _on_replica(self, method: Any, request: WireRequest, timeout: float | None = None) -> Any:
        """`method(request)` on one replica; its death or absence becomes not_ready (503, Retry-After)."""
        response = method.remote(request)
        try:
            return await asyncio.wait_for(_result(response), timeout)
        except (asyncio.CancelledError, TimeoutError) as err:
            response.cancel()  # the caller went away, or waited too long: the replica drops the request's traces
            if isinstance(err, TimeoutError):
                raise ApiError(
                    "deadline_exceeded", f"no replica answered within {timeout:g} s; retry later", retry_after=5
                ) from None
            raise
        except _REPLICA_GONE as err:
            self._metrics.replica_unavailable.inc()
            logger.warning("%s %s: replica unavailable: %s", request.method, request.path, err)
            raise ApiError(
                "not_ready", "the replica handling this request stopped; Ray is replacing it: retry", retry_after=1
            ) from None
        except BackPressureError as err:
            raise ApiError("not_ready", f"every replica is busy ({err}); retry", retry_after=1) from None

    async def _swap(self, request: WireRequest) -> WireResponse:
        await self._claim_swap(request)
        return await self._swap_claimed(request)

    async def _swap_in_background(self, request: WireRequest) -> WireResponse:
        """`Prefer: respond-async`: 202 once the swap holds the lease; it is polled at its Location."""
        try:
            model = LoadModelRequest.model_validate_json(request.body or b"null").model
        except ValidationError as err:
            reason = err.errors()[0]["msg"]
            raise ApiError("invalid_request", f'the body must be {{"model": NAME}}: {reason}') from None
        await self._claim_swap(request)

        async def swap() -> int:
            response = await self._swap_claimed(request)
            if response.status != 200:
                error = json.loads(response.body).get("error") or {}
                raise ApiError(error.get("type", "internal"), error.get("message", "the swap failed"))
            return int(json.loads(response.body)["version"])

        status = self._swaps.start(model, swap())
        headers = [
            (b"content-type", b"application/json"),
            (b"location", f"{SWAPS_PATH}{status.id}".encode()),
            (b"preference-applied", b"respond-async"),
        ]
        return WireResponse(202, headers, status.model_dump_json().encode())

    async def _swap_status(self, request: WireRequest) -> WireResponse:
        await self._admin_guard(_bearer(request))
        status = self._swaps.get(request.path.removeprefix(SWAPS_PATH))
        body = status.model_dump_json(exclude_none=True).encode()
        return WireResponse(200, [(b"content-type", b"application/json")], body)

    async def _claim_swap(self, request: WireRequest) -> None:
        await self._admin_guard(_bearer(request))  # before the lease, so a bad key is 401/403, never 409
        if not await self._registry.begin_swap.remote():
            raise ApiError("conflict", "a model is already being loaded; retry when it is done")

    async def _swap_claimed(self, request: WireRequest) -> WireResponse:
        # Replicas swap one after another under the registry's lease, and the ingress follows them
        # all: a replica's own background swap would answer before the others serve the model.
        request = replace(request, headers=[(k, v) for k, v in request.headers if k.lower() != b"prefer"])
        try:
            response, source, name, version = await self._on_replica(self._model.swap, request)
            if response.status != 200:
                return response
            await self._registry.commit_swap.remote(source, name, version)
            await self._all_serve(version)
            return response
        finally:
            await self._registry.end_swap.remote()

    async def _all_serve(self, version: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SWAP_WAIT_S
        while True:
            state = await self._readiness()
            if state["ready"] and state["version"] == version:
                return
            if state["errors"]:
                raise ApiError(
                    "not_ready", f"not every replica could load the model: {state['message']}", retry_after=10
                )
            if loop.time() > deadline:
                raise ApiError("deadline_exceeded", f"after {SWAP_WAIT_S:g} s, {state['message']}")
            await asyncio.sleep(_SWAP_POLL_S)


async def _result(response: Any) -> Any:
    return await response


def _bearer(request: WireRequest) -> HTTPAuthorizationCredentials | None:
    scheme, token = get_authorization_scheme_param(request.header("authorization"))
    if scheme.lower() != "bearer" or not token:
        return None
    return HTTPAuthorizationCredentials(scheme=scheme, credentials=token)


def _wire(error: ApiError) -> WireResponse:
    response = error_response(error)
    return WireResponse(response.status_code, list(response.raw_headers), bytes(response.body))
