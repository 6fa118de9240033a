"""What scoring returns: per-span drops and per-token weights, JSON-ready."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["ok", "unscorable"]


@dataclass(frozen=True)
class SpanImportance:
    """One probed span of the reasoning and what masking it did to the answer.

    `start`/`end` are character offsets in the completion text, snapped to the token boundaries
    that were actually intervened on; `token_start`/`token_end` index completion tokens.
    """

    start: int
    end: int
    token_start: int
    token_end: int
    text: str
    kind: str
    masked_logprob: float
    drop: float
    exact: bool = True  # False: `drop` was estimated (ScoringConfig.estimator), not computed


@dataclass(frozen=True)
class AnswerRegion:
    """Where the scored answer sits in the completion.

    `token_start`/`token_end` index completion tokens; tokens from `token_end` on are trailing
    EOS/padding. With target="reference" the scored answer `text` is the reference written in the
    completion's format, and may differ from the completion's own tokens in that range.
    """

    start: int
    end: int
    token_start: int
    token_end: int
    text: str
    marker: str


@dataclass
class TraceImportance:
    """The importance of one trace's reasoning spans for its answer.

    `tokens` and `token_weights` align 1:1 with the completion tokens (the caller's own ids for
    token-id traces). An "unscorable" trace has a `reason`, no spans and uniform weights.
    """

    status: Status
    completion: str
    tokens: list[str]
    token_weights: list[float]
    reason: str | None = None
    base_logprob: float | None = None
    spans: list[SpanImportance] = field(default_factory=list)
    answer: AnswerRegion | None = None
    target: Literal["completion", "reference"] = "completion"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; the scoring server sends exactly this."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TraceImportance:
        data = dict(data)
        data["spans"] = [SpanImportance(**s) for s in data.get("spans", [])]
        if data.get("answer") is not None:
            data["answer"] = AnswerRegion(**data["answer"])
        return cls(**data)
