"""Every error the server answers with, and its status code, in one place.

The body is always `{"error": {"type": ..., "message": ..., "trace_index": ...}}`, `trace_index`
only when a single trace is at fault. A malformed request must end here as a 4xx; only a bug in
the server reaches the catch-all's 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ccapo import TraceError

logger = logging.getLogger(__name__)

ErrorType = Literal[
    "invalid_json",
    "unauthorized",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "conflict",
    "payload_too_large",
    "invalid_request",
    "invalid_trace",
    "queue_full",
    "client_closed",
    "internal",
    "not_ready",
    "shutting_down",
    "deadline_exceeded",
]

STATUS: dict[ErrorType, int] = {
    "invalid_json": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "payload_too_large": 413,
    "invalid_request": 422,
    "invalid_trace": 422,
    "queue_full": 429,
    "client_closed": 499,  # nginx's code: nobody reads it, but logs and metrics tell it from a timeout
    "internal": 500,
    "not_ready": 503,
    "shutting_down": 503,
    "deadline_exceeded": 504,
}
_TYPE_OF_STATUS: dict[int, ErrorType] = {
    # FastAPI answers 400 when a JSON body cannot be parsed at all (e.g. it is not UTF-8).
    400: "invalid_json",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "invalid_request",
    429: "queue_full",
    503: "not_ready",
    504: "deadline_exceeded",
}
_MAX_LISTED = 5  # validation problems named in one message; a huge bad batch must not give a huge body


class ApiError(Exception):
    """An error to answer with; `retry_after` (seconds) is sent as the Retry-After header."""

    def __init__(
        self, type: ErrorType, message: str, *, trace_index: int | None = None, retry_after: int | None = None
    ):
        super().__init__(message)
        self.type = type
        self.message = message
        self.trace_index = trace_index
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        return STATUS[self.type]

    @classmethod
    def from_trace_error(cls, err: TraceError) -> ApiError:
        return cls("invalid_trace", str(err), trace_index=err.trace_index)


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": error.type, "message": error.message}
    if error.trace_index is not None:
        body["trace_index"] = error.trace_index
    headers = dict(headers or {})
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, error.retry_after))
    if error.type == "unauthorized":
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": body}, status_code=error.status, headers=headers)


def install_error_handlers(app: FastAPI, count_error: Callable[[str], None]) -> None:
    """Route every exception to the standard body; `count_error` sees each error's type."""

    def respond(error: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
        count_error(error.type)
        return error_response(error, headers)

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return respond(exc)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return respond(validation_error(exc.errors()))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        fallback: ErrorType = "invalid_request" if exc.status_code < 500 else "internal"
        error_type = _TYPE_OF_STATUS.get(exc.status_code, fallback)
        return respond(ApiError(error_type, str(exc.detail)), dict(exc.headers or {}))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return respond(ApiError("internal", "internal server error; the server log has the details"))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


def validation_error(errors: Sequence[Any]) -> ApiError:
    """A pydantic/FastAPI error list as one ApiError naming each offending field path."""
    for e in errors:
        if e.get("type") == "json_invalid":
            where = e["loc"][-1] if isinstance(e["loc"][-1], int) else "?"
            detail = e.get("ctx", {}).get("error", "cannot be parsed")
            return ApiError("invalid_json", f"the request body is not valid JSON: {detail} at character {where}")
        if tuple(e.get("loc", ())) == ("body",) and isinstance(e.get("input"), bytes):
            # FastAPI hands over raw bytes when the Content-Type does not say JSON.
            return ApiError("invalid_json", "the request body must be JSON, sent with Content-Type: application/json")
    lines: list[str] = []
    traces: set[int] = set()
    for e in errors:
        loc = list(e.get("loc", ()))
        if loc[:1] == ["body"]:
            loc = loc[1:]
        if len(loc) >= 2 and loc[0] == "traces" and isinstance(loc[1], int):
            traces.add(loc[1])
        else:
            traces.add(-1)  # a problem outside any single trace
        line = f"{_path(loc) or 'body'}: {str(e.get('msg', 'invalid')).removeprefix('Value error, ')}"
        if line not in lines:
            lines.append(line)
    message = "; ".join(lines[:_MAX_LISTED])
    if len(lines) > _MAX_LISTED:
        message += f"; and {len(lines) - _MAX_LISTED} more"
    only = next(iter(traces)) if len(traces) == 1 else -1
    return ApiError("invalid_request", message, trace_index=only if only >= 0 else None)


def _path(loc: list[Any]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path
