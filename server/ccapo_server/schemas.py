"""The wire schema: request and response bodies, with the examples /docs shows.

Traces and configs are `ccapo.Trace` and `ccapo.ScoringConfig` themselves, so the server accepts
exactly what the library does and rejects unknown fields and values the same way. A trace's
documented schema states those rules too (its two forms, non-negative ids, two-item spans), so
generated clients and fuzzers can tell valid input from invalid; tests/server/test_openapi_fuzz.py
holds the two to each other.
"""

from __future__ import annotations

import inspect
import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from ccapo import ScoringConfig, Trace, TraceImportance
from ccapo_server.settings import ServerSettings

# The OpenAPI tags: the groups of /docs and of a generated client's modules.
SCORING, MODEL, OPERATIONS = "scoring", "model", "operations"
TAGS = [
    {"name": SCORING, "description": "Score reasoning traces: span drops and per-token weights"},
    {"name": MODEL, "description": "The model in service, and swapping it for another (admin)"},
    {"name": OPERATIONS, "description": "Liveness, readiness and Prometheus metrics, for orchestrators"},
]

# Deadlines below this are refused (422): no request is prepared, batched (`max_wait_ms`) and scored that
# fast, even on an accelerator, so such a deadline could only expire, and a 504 would blame the server.
MIN_REQUEST_TIMEOUT_S = 0.1


def _at_least_floor(seconds: float | None) -> float | None:
    if seconds is not None and not (math.isfinite(seconds) and seconds >= MIN_REQUEST_TIMEOUT_S):
        raise ValueError(
            f"{seconds:g} s is not a deadline this server takes: send a finite number of seconds, at least "
            f"{MIN_REQUEST_TIMEOUT_S:g} (this server's floor), or no header for the server's own deadline"
        )
    return seconds


_TIMEOUT_DESCRIPTION = (
    f"seconds, at least {MIN_REQUEST_TIMEOUT_S:g}: a deadline shorter than the server's own "
    "(a longer one changes nothing)"
)
# Documented as a plain number: a header is never JSON null, it is sent or left out.
RequestTimeout = Annotated[
    float | None,
    AfterValidator(_at_least_floor),
    WithJsonSchema({"type": "number", "minimum": MIN_REQUEST_TIMEOUT_S, "description": _TIMEOUT_DESCRIPTION}),
]

_TOKEN_IDS: dict[str, Any] = {"type": "array", "items": {"type": "integer", "minimum": 0}}
_SPANS: dict[str, Any] = {
    "anyOf": [
        {
            "type": "array",
            "items": {
                "type": "array",
                "prefixItems": [{"type": "integer", "minimum": 0}, {"type": "integer", "minimum": 0}],
                "minItems": 2,
                "maxItems": 2,
            },
        },
        {"type": "null"},
    ],
    "description": Trace.model_fields["spans"].description,
}
_CHAT: dict[str, Any] = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["role", "content"],
        "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
    },
}
_OPTIONAL_TEXT: dict[str, Any] = {"anyOf": [{"type": "string"}, {"type": "null"}]}
_NULL: dict[str, Any] = {"type": "null"}


def _form(title: str, required: dict[str, Any], unused: list[str]) -> dict[str, Any]:
    properties = {**required, **dict.fromkeys(unused, _NULL), "reference_answer": _OPTIONAL_TEXT, "spans": _SPANS}
    return {
        "title": title,
        "type": "object",
        "additionalProperties": False,
        "required": list(required),
        "properties": properties,
    }


# `ccapo.Trace`'s validation, as JSON Schema: one of its two forms, each with both of its fields.
TRACE_SCHEMA: dict[str, Any] = {
    "title": "Trace",
    "description": inspect.cleandoc(Trace.__doc__ or ""),
    "oneOf": [
        _form(
            "TextTrace",
            {"prompt": {"anyOf": [{"type": "string"}, _CHAT]}, "completion": {"type": "string"}},
            ["prompt_ids", "completion_ids"],
        ),
        _form(
            "TokenIdTrace",
            {"prompt_ids": {**_TOKEN_IDS, "minItems": 1}, "completion_ids": _TOKEN_IDS},
            ["prompt", "completion"],
        ),
    ],
}
WireTrace = Annotated[Trace, WithJsonSchema(TRACE_SCHEMA)]


class ImportanceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    traces: list[WireTrace] = Field(min_length=1, description="traces to score; results come back in this order")
    config: ScoringConfig = Field(default_factory=ScoringConfig, description="how to segment, intervene and weight")


class ModelRef(BaseModel):
    id: str
    version: str = Field(
        description="increments each time a model is put in service; a response names the one that scored it"
    )


class Usage(BaseModel):
    traces: int
    counterfactuals: int = Field(description="masked variants scored (one per probed span)")
    forward_tokens: int = Field(description="tokens pushed through the model for these traces")
    queue_ms: float = Field(description="how long the request's first trace waited for a batch")
    compute_ms: float = Field(description="engine time of the batches that scored it (shared with other requests)")


class ImportanceResponse(BaseModel):
    model: ModelRef
    results: list[TraceImportance] = Field(description="`TraceImportance.to_dict()` per trace, in request order")
    usage: Usage


class Limits(BaseModel):
    """What one request may cost, and how the server batches and queues work (docs/server.md)."""

    max_traces_per_request: int
    max_tokens_per_trace: int
    max_counterfactuals_per_trace: int = Field(description="probed spans per trace")
    max_feed_tokens_per_trace: int = Field(description="feed tokens (base pass plus counterfactual rows) per trace")
    max_feed_tokens_per_request: int
    max_body_bytes: int
    server_batch_tokens: int = Field(description="feed tokens one server batch holds")
    max_batch_tokens: int = Field(description="deprecated: server_batch_tokens under its old name")
    max_wait_ms: float
    max_queue_traces: int
    max_queue_tokens: int = Field(description="feed tokens the queue holds before new requests get 429")

    @classmethod
    def of(cls, settings: ServerSettings) -> Limits:
        names = set(cls.model_fields) - {"max_batch_tokens"}
        return cls(max_batch_tokens=settings.server_batch_tokens, **{n: getattr(settings, n) for n in names})


class ModelInfo(BaseModel):
    id: str
    version: str
    device: str
    dtype: str
    context_length: int
    limits: Limits


class LoadModelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        min_length=1, description="a directory under one of the server's model roots (or a hub id, when allowed)"
    )


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    model: ModelRef | None = Field(None, description="the model in service; left out without the API key")


class ErrorDetail(BaseModel):
    type: str = Field(description="machine-readable: invalid_request, invalid_trace, queue_full, ...")
    message: str = Field(description="what went wrong and what to do about it")
    trace_index: int | None = Field(None, description="the offending trace, when one trace is at fault")


class ErrorBody(BaseModel):
    error: ErrorDetail


TEXT_TRACE = {"prompt": "What is 2 + 3?", "completion": "First, 2 + 3 = 5.\n#### 5"}

IMPORTANCE_EXAMPLES: dict[str, Any] = {
    "text": {
        "summary": "A text trace",
        "description": "The prompt is rendered with the model's chat template; the completion is tokenized as is.",
        "value": {"traces": [TEXT_TRACE]},
    },
    "token_ids": {
        "summary": "A token-id trace, with a config",
        "description": "Ids from an RL stack are used verbatim: weights align 1:1 with `completion_ids`.",
        "value": {
            "traces": [
                {
                    "prompt_ids": [1780, 314, 216, 34, 1232, 216, 35, 47],
                    "completion_ids": [34, 1232, 216, 35, 446, 216, 37, 30, 198, 1229, 216, 37, 2],
                }
            ],
            "config": {"intervention": "pad", "weights": {"scheme": "normalized"}},
        },
    },
}

IMPORTANCE_RESPONSE_EXAMPLE: dict[str, Any] = {
    "model": {"id": "smollm2-135m-instruct", "version": "1"},
    "results": [
        {
            "status": "ok",
            "completion": "First, 2 + 3 = 5.\n#### 5",
            "tokens": ["First", ",", " ", "2", " +", " ", "3", " =", " ", "5", ".", "\n", "####", " ", "5"],
            "token_weights": [2.25, 2.25, 2.25, 4.0, 4.0, 4.0, 4.0, 0.85, 4.0, 4.0, 2.25, 2.25, 1.5, 1.5, 1.5],
            "reason": None,
            "base_logprob": -8.5644,
            "spans": [
                {
                    "start": 7,
                    "end": 16,
                    "token_start": 3,
                    "token_end": 10,
                    "text": "2 + 3 = 5",
                    "kind": "calc",
                    "masked_logprob": -15.3195,
                    "drop": 6.7551,
                }
            ],
            "answer": {"start": 18, "end": 24, "token_start": 12, "token_end": 15, "text": "#### 5", "marker": "####"},
            "target": "completion",
        }
    ],
    "usage": {"traces": 1, "counterfactuals": 1, "forward_tokens": 71, "queue_ms": 10.4, "compute_ms": 38.2},
}
