"""The HTTP routes: scoring, model info and swap, health, readiness, metrics."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse, Response

from ccapo_server.auth import admin_key_guard, api_key_guard, has_key
from ccapo_server.errors import ApiError
from ccapo_server.model_access import choose_model
from ccapo_server.runtime import Runtime
from ccapo_server.scheduler import Scheduler
from ccapo_server.schemas import (
    IMPORTANCE_EXAMPLES,
    IMPORTANCE_RESPONSE_EXAMPLE,
    MODEL,
    OPERATIONS,
    SCORING,
    ErrorBody,
    Health,
    ImportanceRequest,
    ImportanceResponse,
    Limits,
    LoadModelRequest,
    ModelInfo,
    Readiness,
    RequestTimeout,
)
from ccapo_server.swaps import SWAPS_PATH, SwapStatus, prefers_async
from ccapo_server.tickets import Scored, Ticket

_DISCONNECT_POLL_S = 0.1  # how often a waiting request checks whether its client is still there


class ResultsResponse(JSONResponse):
    """JSON that may hold -Infinity: a model can give an answer zero probability, and that is a result, not a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in statuses}


def add_routes(app: FastAPI, runtime: Runtime) -> None:
    # Registered on the app itself, not an included router, so each route's path template is
    # one of app.routes: the request metrics label requests by it.
    settings = runtime.settings
    scoring = [Depends(api_key_guard(settings.api_key))]

    @app.post(
        "/v1/importance",
        response_model=ImportanceResponse,
        dependencies=scoring,
        operation_id="score",
        tags=[SCORING],
        summary="Score traces: span drops and token weights",
        responses={
            200: {"content": {"application/json": {"example": IMPORTANCE_RESPONSE_EXAMPLE}}},
            # A client that goes away gets nothing; logs and metrics record that answer as 499.
            **_errors(400, 401, 422, 429, 503, 504),
        },
    )
    async def importance(
        request: Request,
        body: Annotated[ImportanceRequest, Body(openapi_examples=IMPORTANCE_EXAMPLES)],
        x_request_timeout: Annotated[RequestTimeout, Header()] = None,
    ) -> Response:
        timeout = min(settings.request_timeout_s, x_request_timeout or settings.request_timeout_s)
        if len(body.traces) > settings.max_traces_per_request:
            raise ApiError(
                "invalid_request",
                f"traces: {len(body.traces)} traces, over this server's limit of {settings.max_traces_per_request} "
                "per request; split them over several requests",
            )
        scheduler = runtime.scheduler
        ticket = scheduler.submit(body.traces, body.config, timeout)
        try:
            scored = await _wait(ticket, request, timeout)
        finally:
            if not ticket.future.done():
                scheduler.cancel(ticket)  # gone for any reason: nothing more is computed for it
        return ResultsResponse(
            {
                "model": {"id": scored.model_id, "version": str(scored.version)},
                "results": [r.to_dict() for r in scored.results],
                "usage": asdict(scored.usage),
            }
        )

    @app.get(
        "/v1/model",
        response_model=ModelInfo,
        dependencies=scoring,
        operation_id="get_model",
        tags=[MODEL],
        summary="The model in service: id, version, device, dtype, context length and this server's limits",
        responses=_errors(401, 503),
    )
    async def model_info() -> ModelInfo:
        return _model_info(runtime)

    admin = [Depends(admin_key_guard(settings.admin_key))]

    @app.post(
        "/v1/model",
        response_model=ModelInfo,
        dependencies=admin,
        operation_id="load_model",
        tags=[MODEL],
        summary="Load another model and put it in service (admin)",
        description=(
            "Answers once the model is in service (200), or at once with `Prefer: respond-async` (202): "
            "then poll the swap at its `Location` until it is live or failed. Only one swap runs at a time (409)."
        ),
        include_in_schema=settings.admin_key is not None,
        responses={
            202: {
                "model": SwapStatus,
                "description": "the swap started (Prefer: respond-async); poll its Location",
                "headers": {
                    "Location": {"description": "the swap to poll", "schema": {"type": "string"}},
                    "Preference-Applied": {"description": "respond-async", "schema": {"type": "string"}},
                },
            },
            **_errors(400, 401, 403, 404, 409, 422, 503),
        },
    )
    async def load_model(
        body: LoadModelRequest,
        prefer: Annotated[
            str | None, Header(description="`respond-async`: answer 202 at once and load in the background (RFC 7240)")
        ] = None,
    ) -> Response | ModelInfo:
        source, name = choose_model(body.model, settings)  # a bad name is refused now, in either mode
        if prefers_async(prefer):
            swap = runtime.swap_in_background(source, name)
            headers = {"Location": f"{SWAPS_PATH}{swap.id}", "Preference-Applied": "respond-async"}
            return JSONResponse(swap.model_dump(mode="json"), status_code=202, headers=headers)
        await runtime.swap(source, name)
        return _model_info(runtime)

    @app.get(
        SWAPS_PATH + "{swap_id}",
        response_model=SwapStatus,
        response_model_exclude_none=True,
        dependencies=admin,
        operation_id="get_swap",
        tags=[MODEL],
        summary="Where a model swap stands: pending, live (with its version) or failed (with why) (admin)",
        include_in_schema=settings.admin_key is not None,
        responses=_errors(401, 403, 404),
    )
    async def swap_status(swap_id: str) -> SwapStatus:
        return runtime.swaps.get(swap_id)

    @app.get(
        "/healthz",
        response_model=Health,
        operation_id="get_health",
        tags=[OPERATIONS],
        summary="Liveness: the process answers",
    )
    async def healthz() -> Health:
        return Health(status="alive")

    @app.get(
        "/readyz",
        response_model=Readiness,
        response_model_exclude_none=True,
        operation_id="get_readiness",
        tags=[OPERATIONS],
        summary="Readiness: a model is loaded and warm (which one: only with the API key, when one is set)",
        responses=_errors(503),
    )
    async def readyz(request: Request) -> Readiness:
        scheduler = runtime.scheduler
        if not scheduler.accepting:
            raise ApiError("shutting_down", "the server is shutting down", retry_after=1)
        if not has_key(request.headers.get("Authorization"), settings.api_key):
            return Readiness(status="ready")  # probes need no key, and learn nothing more without one
        return Readiness(status="ready", model={"id": scheduler.model_id, "version": str(scheduler.version)})

    @app.get(
        "/metrics",
        operation_id="get_metrics",
        tags=[OPERATIONS],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Response:
        return Response(runtime.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def _wait(ticket: Ticket, request: Request, timeout: float) -> Scored:
    """The ticket's result, unless the deadline passes (504) or the client goes away first."""
    while True:
        left = ticket.deadline - time.monotonic()
        if left <= 0:
            raise ApiError(
                "deadline_exceeded", f"not scored within the {timeout:g} s deadline; retry or send fewer traces"
            )
        done, _ = await asyncio.wait({ticket.future}, timeout=min(left, _DISCONNECT_POLL_S))
        if done:
            return ticket.future.result()
        if await request.is_disconnected():
            raise ApiError("client_closed", "the client went away before its results were ready")


def _model_info(runtime: Runtime) -> ModelInfo:
    scheduler: Scheduler = runtime.scheduler
    model = scheduler.scorer.model
    return ModelInfo(
        id=scheduler.model_id,
        version=str(scheduler.version),
        device=str(model.device),
        dtype=str(model.dtype).removeprefix("torch."),
        context_length=scheduler.scorer.context_length,
        limits=Limits.of(runtime.settings),
    )
