"""A purpose-built scoring server for the client tests, with scripted answers.

A `FakeServer` answers its `script` first, one entry per request, then behaves like a healthy
scoring server: it echoes each trace back as an "ok" result with one token per word, and rejects
traces marked `"bad": true` the way the real server rejects a bad trace.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

MODEL_INFO = {
    "id": "fake",
    "version": "1",
    "device": "cpu",
    "dtype": "float32",
    "context_length": 1024,
    "limits": {"max_traces_per_request": 64},
}


def result_for(trace: dict[str, Any]) -> dict[str, Any]:
    """A valid result of the server's schema, derived from the trace so tests can check alignment."""
    completion = trace["completion"]
    tokens = completion.split()
    return {
        "status": "ok",
        "completion": completion,
        "tokens": tokens,
        "token_weights": [1.0] * len(tokens),
        "reason": None,
        "base_logprob": -1.5,
        "spans": [
            {
                "start": 0,
                "end": len(tokens[0]),
                "token_start": 0,
                "token_end": 1,
                "text": tokens[0],
                "kind": "sentence",
                "masked_logprob": -2.0,
                "drop": 0.5,
                "exact": True,
            }
        ],
        "answer": {"start": 0, "end": 1, "token_start": 1, "token_end": 2, "text": "5", "marker": "####"},
        "target": "completion",
    }


def error(status: int, type_: str, message: str, trace_index: int | None = None, **headers: str) -> JSONResponse:
    body: dict[str, Any] = {"type": type_, "message": message}
    if trace_index is not None:
        body["trace_index"] = trace_index
    return JSONResponse({"error": body}, status_code=status, headers=headers)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float


@dataclass
class FakeServer:
    url: str = ""
    script: list[JSONResponse] = field(default_factory=list)
    model_info: dict[str, Any] = field(default_factory=lambda: dict(MODEL_INFO))
    seen: list[Seen] = field(default_factory=list)

    def calls(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    async def handle(self, request: Request) -> JSONResponse:
        body = await request.json() if request.method == "POST" else None
        self.seen.append(Seen(request.method, request.url.path, dict(request.headers), body, time.monotonic()))
        if self.script:
            return self.script.pop(0)
        path = request.url.path
        if path in ("/healthz", "/readyz"):
            return JSONResponse({"status": "ok"})
        if path == "/v1/model":
            if request.method == "POST":
                self.model_info = {**self.model_info, "id": body["model"], "version": "2"}
            return JSONResponse(self.model_info)
        if path == "/v1/importance":
            bad = [i for i, t in enumerate(body["traces"]) if t.get("bad")]
            if bad:
                return error(422, "invalid_trace", f"trace {bad[0]}: spans overlap", trace_index=bad[0])
            results = [result_for(t) for t in body["traces"]]
            usage = {"traces": len(results), "counterfactuals": len(results), "forward_tokens": 10}
            return JSONResponse(
                {
                    "model": {"id": self.model_info["id"], "version": self.model_info["version"]},
                    "results": results,
                    "usage": {**usage, "queue_ms": 0.1, "compute_ms": 1.0},
                }
            )
        return error(404, "not_found", f"no route {path}")


def free_port() -> int:
    """A loopback port nothing listens on (for a server that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
