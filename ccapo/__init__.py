"""ccapo: counterfactual credit assignment for policy optimization.

Mask a span of a model's own reasoning, measure how much the log-probability of its answer drops,
and weight that span's tokens accordingly in the policy-gradient loss.
"""

from ccapo.config import ScoringConfig
from ccapo.result import AnswerRegion, SpanImportance, TraceImportance
from ccapo.scorer import PreparedTrace, ScoredBatch, Scorer, TraceError, Usage, token_weights
from ccapo.trace import Trace
from ccapo.weights import WeightConfig

__all__ = [
    "AnswerRegion",
    "PreparedTrace",
    "ScoredBatch",
    "Scorer",
    "ScoringConfig",
    "SpanImportance",
    "Trace",
    "TraceError",
    "TraceImportance",
    "Usage",
    "WeightConfig",
    "token_weights",
]
__version__ = "0.2.0.dev0"
