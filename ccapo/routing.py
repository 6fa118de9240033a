"""Prepared jobs to their estimators: exact ones to the exact runner, the others to `gradient.py`,
`refine.py` (which builds on the exact runner) and `horizon.py`, results back in the jobs' order."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from transformers import PreTrainedModel

from ccapo.estimators import ESTIMATORS
from ccapo.gradient import gradient_scores
from ccapo.horizon import horizon_scores
from ccapo.jobs import Cancelled, EngineJob, JobScores, Progress
from ccapo.refine import Exact, refine_scores


def estimate(
    model: PreTrainedModel,
    exact: Exact,
    jobs: Sequence[EngineJob],
    cancelled: Cancelled,
    progress: Progress | None = None,
) -> list[JobScores | None]:
    """Each job's scores by its own estimator, aligned with `jobs` (None: cancelled).

    Jobs of one estimator run together, so each batches across traces; `progress` counts jobs over all.
    """
    runners = {
        "exact": exact,
        "gradient": partial(gradient_scores, model),
        "refine": partial(refine_scores, exact),
        "horizon": partial(horizon_scores, model),
    }
    results: list[JobScores | None] = [None] * len(jobs)
    done = 0
    for estimator in ESTIMATORS:
        picked = [i for i, job in enumerate(jobs) if job.estimator == estimator]
        if not picked:
            continue
        step = None if progress is None else lambda k, _n, base=done: progress(base + k, len(jobs))
        scores = runners[estimator]([jobs[i] for i in picked], lambda k, idx=picked: cancelled(idx[k]), step)
        for i, score in zip(picked, scores, strict=True):
            results[i] = score
        done += len(picked)
    return results
