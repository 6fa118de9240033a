"""What every estimator takes and gives: one trace ready for scoring (`EngineJob`) and its scores.

The exact engine (`engine.py`), the naive reference and the approximate estimators all work on
these, so they live apart from any one of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property

from ccapo.estimators import Estimator
from ccapo.interventions import Branch, Intervention, WindowedBranch, branch, windowed_branch

Progress = Callable[[int, int], None]
# Asked before every forward pass with a job's index: True drops that job's remaining rows (and, once every
# job of a group says so, the pass in flight at its next decoder layer).
Cancelled = Callable[[int], bool]


@dataclass(frozen=True)
class EngineJob:
    """One trace ready for scoring: `ids` = prompt + reasoning + answer, spans as positions in `ids`.

    `estimator` says how its drops are estimated (`estimators.py`); the exact engine here takes
    "exact" jobs, `Scorer.compute` routes the others.
    """

    ids: list[int]
    answer_start: int
    spans: list[tuple[int, int]]
    intervention: Intervention
    placeholder: int
    estimator: Estimator = "exact"
    refine_budget: float = 0.5  # "refine": share of the exact feed tokens it may spend
    horizon_window: int = 256  # "horizon": tokens recomputed after each span
    horizon_tail: int = 0  # "horizon": tokens recomputed before the answer
    horizon_verify: int = 0  # "horizon": spans then made exact, largest estimated |drop| first

    @property
    def counterfactuals(self) -> int:
        """Masked variants the engine scores for this job: one row per span."""
        return len(self.spans)

    @cached_property
    def feed_tokens(self) -> int:
        """Tokens scoring this job may feed through the model, known before any model work.

        Exact: its base pass plus each row's recomputed suffix, exactly `JobScores.forward_tokens`
        once scored. Gradient: its one pass (the backward feeds no tokens). Refine: its budget's
        share of the exact cost, but never less than one block of all spans costs (the least that
        yields any drop, at most the exact cost); refine never exceeds it. Horizon: its base pass and
        windowed rows, plus at most its verified spans' whole suffixes (the longest rows).
        A scheduler budgets work by this.
        """
        if self.estimator == "gradient":
            return len(self.ids)
        if self.estimator == "horizon":
            return self.horizon_feed_tokens
        exact = self.exact_feed_tokens
        if self.estimator == "exact":
            return exact
        whole = [(min(s for s, _ in self.spans), max(e for _, e in self.spans))] if self.spans else []
        return max(math.ceil(self.refine_budget * exact), replace(self, spans=whole).exact_feed_tokens)

    @property
    def horizon_feed_tokens(self) -> int:
        windowed = len(self.ids) + sum(len(row.tokens) for row in self.windowed_branches())
        longest = sorted((len(b.tokens) for b in self.branches()), reverse=True)[: self.horizon_verify]
        return windowed + sum(longest)

    @property
    def exact_feed_tokens(self) -> int:
        """What the exact estimator feeds for this job's spans."""
        return len(self.ids) + sum(len(b.tokens) for b in self.branches())

    def windowed_branches(self) -> list[WindowedBranch]:
        """The horizon estimator's rows, one per span, under `horizon_window` and `horizon_tail`."""
        knobs = (self.intervention, self.placeholder, self.horizon_window, self.horizon_tail)
        return [windowed_branch(self.ids, self.answer_start, span, *knobs) for span in self.spans]

    def branches(self) -> list[Branch]:
        """The counterfactual rows, one per span, as the engine feeds them."""
        return [branch(self.ids, self.answer_start, span, self.intervention, self.placeholder) for span in self.spans]


@dataclass(frozen=True)
class JobScores:
    base_logprob: float
    masked_logprobs: list[float]
    forward_tokens: int = 0  # tokens pushed through the model for this job
    exact: list[bool] | None = None  # per span: its masked score was computed, not estimated (None: all were)


def never_cancelled(job: int) -> bool:
    return False
