"""The scoring server's wire schema, mirrored rather than imported: the client shares no code with ccapo.

Results ignore fields they do not know, so an older client keeps working against a newer server.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SpanImportance(_Wire):
    """One probed span: character range `start:end`, completion-token range `token_start:token_end`."""

    start: int
    end: int
    token_start: int
    token_end: int
    text: str
    kind: str
    masked_logprob: float
    drop: float
    exact: bool = True  # False: the drop was estimated (config "estimator"), not computed


class AnswerRegion(_Wire):
    """Where the scored answer sits in the completion (characters and completion tokens)."""

    start: int
    end: int
    token_start: int
    token_end: int
    text: str
    marker: str


class TraceImportance(_Wire):
    """The importance of one trace's reasoning spans for its answer, as `ccapo.TraceImportance`.

    Mutable like the in-process result, so code that reassigns `token_weights` works with either.
    """

    status: Literal["ok", "unscorable"]
    completion: str
    tokens: list[str]
    token_weights: list[float]
    reason: str | None = None
    base_logprob: float | None = None
    spans: list[SpanImportance] = []
    answer: AnswerRegion | None = None
    target: str = "completion"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict the server sent (its known fields)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TraceImportance:
        return cls.model_validate(data)


class ModelRef(_Wire):
    """The model that scored a response; `version` goes up each time the server puts a model in service."""

    id: str
    version: str


class Usage(_Wire):
    traces: int
    counterfactuals: int
    forward_tokens: int
    queue_ms: float
    compute_ms: float


class ScoreResponse(_Wire):
    """`POST /v1/importance`: results align with the request's traces."""

    model: ModelRef
    results: list[TraceImportance]
    usage: Usage


class ModelInfo(BaseModel):
    """`GET /v1/model`. `limits` holds the server's request limits, e.g. `max_traces_per_request`."""

    model_config = ConfigDict(extra="allow")

    id: str
    version: str
    device: str
    dtype: str
    context_length: int
    limits: dict[str, Any] = {}
