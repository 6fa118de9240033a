"""Typed errors from the server's error body `{"error": {"type", "message", "trace_index"?}}`."""

from __future__ import annotations

import math
import re
from typing import Any

import httpx


class ApiError(Exception):
    """An error answer from the scoring server.

    `status` is the HTTP status, `type` the server's error type (e.g. "queue_full"), `message` what
    it said, and `trace_index` the offending trace's index in the request, when one is to blame.
    `retry_after` is the seconds the server asked the client to wait (its Retry-After), if it did.
    """

    retry_after: float | None = None

    def __init__(self, status: int, type: str, message: str, trace_index: int | None = None):
        # The server may already prefix "trace N: "; drop it so the index is stated once, and so a
        # RemoteScorer that re-bases the index of a split request does not leave a stale one behind.
        if trace_index is not None:
            message = re.sub(rf"^trace {trace_index}:\s*", "", message)
        where = f"trace {trace_index}: " if trace_index is not None else ""
        super().__init__(f"{where}{message} [HTTP {status} {type}]")
        self.status = status
        self.type = type
        self.message = message
        self.trace_index = trace_index


class InvalidRequestError(ApiError, ValueError):
    """422 invalid_request / invalid_trace: fix the input. A ValueError, as ccapo's in-process TraceError."""


class UnauthorizedError(ApiError):
    """401: no API key, or a wrong one (`api_key=`)."""


class ForbiddenError(ApiError):
    """403: the key may not do this (loading a model needs `admin_key=`)."""


class NotFoundError(ApiError):
    """404: no such route or model path."""


class PayloadTooLargeError(ApiError):
    """413: the request is over the server's size limits (see `model_info().limits`)."""


class QueueFullError(ApiError):
    """429: the server's queue stayed full through every retry."""


class NotReadyError(ApiError):
    """503: the server was loading a model or starting through every retry."""


class DeadlineExceededError(ApiError):
    """504: the request waited or ran past the server's deadline."""


class PartialScoreError(Exception):
    """Some parts of a split `RemoteScorer.score()` call failed through every retry; the others were scored.

    `results` aligns with the caller's traces: the result, or None where the trace's part failed;
    `errors` maps the index of each failed trace to its part's last error. A trainer keeps the
    results it got and leaves only the failed traces unweighted.
    """

    def __init__(self, results: list[Any], errors: dict[int, Exception]):
        parts = list(dict.fromkeys(map(str, errors.values())))
        super().__init__(f"{len(errors)} of {len(results)} traces were not scored: {'; '.join(parts)}")
        self.results = results
        self.errors = errors


class RequestTimeoutError(TimeoutError):
    """No answer within the client's `timeout` (reading, writing, or waiting for a pooled connection).

    Not retried: the server may already have the work. `server` is the URL that did not answer.
    """

    def __init__(self, server: str, message: str):
        super().__init__(f"{server}: {message}")
        self.server = server


_BY_TYPE: dict[str, type[ApiError]] = {
    "invalid_request": InvalidRequestError,
    "invalid_trace": InvalidRequestError,
    "unauthorized": UnauthorizedError,
    "forbidden": ForbiddenError,
    "not_found": NotFoundError,
    "payload_too_large": PayloadTooLargeError,
    "queue_full": QueueFullError,
    "not_ready": NotReadyError,
    "deadline_exceeded": DeadlineExceededError,
}
# For bodies that are not the server's own (a proxy's 502 page, a framework's default 422).
_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    422: InvalidRequestError,
    429: QueueFullError,
    503: NotReadyError,
    504: DeadlineExceededError,
}


def error_from_response(response: httpx.Response) -> ApiError:
    """The typed error for a non-2xx response, whatever its body looks like."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        type_ = str(error.get("type") or response.reason_phrase)
        message = str(error.get("message", ""))
        index = error.get("trace_index")
        trace_index = index if isinstance(index, int) else None
    else:
        type_ = response.reason_phrase.lower().replace(" ", "_")
        message = response.text[:500] or response.reason_phrase
        trace_index = None
    cls = _BY_TYPE.get(type_) or _BY_STATUS.get(response.status_code, ApiError)
    error = cls(response.status_code, type_, message, trace_index)
    error.retry_after = retry_after(response)
    return error


def retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds; the HTTP-date form is not used by the scoring server and falls back to backoff."""
    try:
        seconds = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None
