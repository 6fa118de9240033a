"""The wire schema: request and response bodies, with the examples /docs shows.

Traces and configs are `ccapo.Trace` and `ccapo.ScoringConfig` themselves, so the server accepts
exactly what the library does and rejects unknown fields and values the same way.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ccapo import ScoringConfig, Trace, TraceImportance
from ccapo_server.settings import ServerSettings


class ImportanceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    traces: list[Trace] = Field(min_length=1, description="traces to score; results come back in this order")
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
    """What one request may cost, and how the server batches and queues work (README, "Scoring server")."""

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
