"""ccapo-client: the HTTP client of the ccapo scoring server.

`Client` and `AsyncClient` speak the REST API with retries and round-robin over several servers;
`RemoteScorer` has `ccapo.Scorer.score()`'s contract, so a trainer switches between in-process and
remote scoring with one setting; `RayScorer` is the same through a Ray Serve deployment handle.
"""

from ccapo_client._version import __version__
from ccapo_client.client import AsyncClient, Client
from ccapo_client.errors import (
    ApiError,
    DeadlineExceededError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    NotReadyError,
    PartialScoreError,
    PayloadTooLargeError,
    QueueFullError,
    RequestTimeoutError,
    UnauthorizedError,
)
from ccapo_client.models import (
    AnswerRegion,
    ModelInfo,
    ModelRef,
    ScoreResponse,
    SpanImportance,
    TraceImportance,
    Usage,
)
from ccapo_client.ray import RayScorer
from ccapo_client.remote import RemoteScorer
from ccapo_client.swaps import ModelSwap

__all__ = [
    "AnswerRegion",
    "ApiError",
    "AsyncClient",
    "Client",
    "DeadlineExceededError",
    "ForbiddenError",
    "InvalidRequestError",
    "ModelInfo",
    "ModelRef",
    "ModelSwap",
    "NotFoundError",
    "NotReadyError",
    "PartialScoreError",
    "PayloadTooLargeError",
    "QueueFullError",
    "RayScorer",
    "RemoteScorer",
    "RequestTimeoutError",
    "ScoreResponse",
    "SpanImportance",
    "TraceImportance",
    "UnauthorizedError",
    "Usage",
    "__version__",
]
