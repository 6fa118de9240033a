"""The names ccapo's metrics go by, one set for `ccapo train` and every adapter.

Every metric is namespaced `ccapo/` so it sits beside a framework's own (TRL's, verl's, OpenRLHF's)
without a clash: the weight statistics of `BatchWeights.metrics` as `ccapo/weights/<name>`, the
seconds spent scoring, and the policy lag.
"""

from __future__ import annotations

from collections.abc import Mapping

PREFIX = "ccapo/"
WEIGHT_HISTOGRAM = "ccapo/weights/hist"  # `ccapo train`'s per-step weight histogram
SCORE_SECONDS = "ccapo/score_seconds"
# Optimizer updates the scorer's model is behind the policy that generated the rows it scored: 0 when it
# scored with that very policy. Logged wherever a server or Ray scorer follows the policy by syncs.
POLICY_LAG = "ccapo/policy_lag_steps"


def namespaced(metrics: Mapping[str, float]) -> dict[str, float]:
    """`BatchWeights.metrics()` (keys such as "weights/mean") under ccapo's namespace ("ccapo/weights/mean")."""
    return {f"{PREFIX}{key}": value for key, value in metrics.items()}


def policy_lag(rollout_updates: int, synced_updates: int | None) -> float:
    """The policy lag (`POLICY_LAG`) when the rollouts came from the policy after `rollout_updates`
    optimizer updates and the scorer last loaded the policy after `synced_updates` (None: it still
    runs the model it started with, counted as the policy before any update)."""
    return float(max(rollout_updates - (synced_updates or 0), 0))
