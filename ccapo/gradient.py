"""The first-order estimator (`estimator="gradient"`): every span's drop from one forward and one backward pass."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedModel

from ccapo.engine import Cancelled, EngineJob, JobScores, Progress


def gradient_scores(
    model: PreTrainedModel, jobs: Sequence[EngineJob], cancelled: Cancelled, progress: Progress | None = None
) -> list[JobScores | None]:
    raise NotImplementedError("the gradient estimator is being built (issue 16)")
