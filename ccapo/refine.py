"""Hierarchical refinement (`estimator="refine"`): exact block drops, then exact span drops inside the top blocks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ccapo.engine import Cancelled, EngineJob, JobScores, Progress

Exact = Callable[[Sequence[EngineJob], Cancelled, Progress | None], list[JobScores | None]]


def refine_scores(
    exact: Exact, jobs: Sequence[EngineJob], cancelled: Cancelled, progress: Progress | None = None
) -> list[JobScores | None]:
    raise NotImplementedError("the refine estimator is being built (issue 16)")
