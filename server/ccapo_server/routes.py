"""The HTTP routes: scoring, model info and swap, health, readiness, metrics."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse, Response

from ccapo import TraceError
from ccapo_server.auth import admin_key_guard, api_key_guard
from ccapo_server.batcher import Batcher, Scored, Ticket
from ccapo_server.errors import ApiError
from ccapo_server.model_access import resolve_model_source
from ccapo_server.runtime import Runtime
from ccapo_server.schemas import (
    IMPORTANCE_EXAMPLES,
    IMPORTANCE_RESPONSE_EXAMPLE,
    ErrorBody,
    Health,
    ImportanceRequest,
    ImportanceResponse,
    LoadModelRequest,
    ModelInfo,
    Readiness,
)

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
        summary="Score traces: span drops and token weights",
        responses={
            200: {"content": {"application/json": {"example": IMPORTANCE_RESPONSE_EXAMPLE}}},
            **_errors(400, 401, 413, 422, 429, 503, 504),
        },
    )
    async def importance(
        request: Request,
        body: Annotated[ImportanceRequest, Body(openapi_examples=IMPORTANCE_EXAMPLES)],
        x_request_timeout: Annotated[
            float | None, Header(gt=0, description="seconds; a deadline shorter than the server's own")
        ] = None,
    ) -> Response:
        loop = asyncio.get_running_loop()
        timeout = min(settings.request_timeout_s, x_request_timeout or settings.request_timeout_s)
        deadline = loop.time() + timeout
        if len(body.traces) > settings.max_traces_per_request:
            raise ApiError(
                "invalid_request",
                f"traces: {len(body.traces)} traces, over this server's limit of {settings.max_traces_per_request} "
                "per request; split them over several requests",
            )
        batcher = runtime.batcher
        try:
            ticket = await batcher.submit(body.traces, body.config)
        except TraceError as err:
            raise ApiError.from_trace_error(err) from None
        try:
            scored = await _wait(ticket, batcher, request, deadline, timeout)
        finally:
            if not ticket.future.done():
                batcher.cancel(ticket)  # gone for any reason: its queued traces must not be scored
        return ResultsResponse(
            {
                "model": {"id": scored.model_id, "version": str(scored.version)},
                "results": [r.to_dict() for r in scored.results],
                "usage": asdict(scored.usage),
            }
        )

    @app.get("/v1/model", response_model=ModelInfo, dependencies=scoring, responses=_errors(401, 503))
    async def model_info() -> ModelInfo:
        return _model_info(runtime)

    @app.post(
        "/v1/model",
        response_model=ModelInfo,
        dependencies=[Depends(admin_key_guard(settings.admin_key))],
        summary="Load another model and put it in service (admin)",
        include_in_schema=settings.admin_key is not None,
        responses=_errors(401, 403, 404, 409, 422, 503),
    )
    async def load_model(body: LoadModelRequest) -> ModelInfo:
        await runtime.swap(resolve_model_source(body.model, settings))
        return _model_info(runtime)

    @app.get("/healthz", response_model=Health, summary="Liveness: the process answers")
    async def healthz() -> Health:
        return Health(status="alive")

    @app.get(
        "/readyz", response_model=Readiness, summary="Readiness: a model is loaded and warm", responses=_errors(503)
    )
    async def readyz() -> Readiness:
        batcher = runtime.batcher
        if not batcher.accepting:
            raise ApiError("not_ready", "the server is shutting down", retry_after=1)
        return Readiness(status="ready", model={"id": batcher.model_id, "version": str(batcher.version)})

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(runtime.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def _wait(ticket: Ticket, batcher: Batcher, request: Request, deadline: float, timeout: float) -> Scored:
    """The ticket's result, unless the deadline passes (504) or the client goes away first."""
    loop = asyncio.get_running_loop()
    while True:
        left = deadline - loop.time()
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
    batcher = runtime.batcher
    model = batcher.scorer.model
    settings = runtime.settings
    return ModelInfo(
        id=batcher.model_id,
        version=str(batcher.version),
        device=str(model.device),
        dtype=str(model.dtype).removeprefix("torch."),
        context_length=batcher.scorer.context_length,
        limits={
            "max_traces_per_request": settings.max_traces_per_request,
            "max_tokens_per_trace": settings.max_tokens_per_trace,
            "max_body_bytes": settings.max_body_bytes,
            "max_batch_tokens": settings.max_batch_tokens,
            "max_wait_ms": settings.max_wait_ms,
            "max_queue_traces": settings.max_queue_traces,
        },
    )
