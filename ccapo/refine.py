"""Hierarchical refinement (`estimator="refine"`): exact block drops, then exact span drops inside
the highest-drop blocks, within a share of the exact estimator's cost.

For one job with n spans:

1. Blocks. Its spans, in position order, are cut into k consecutive groups of near-equal count. A
   block is intervened on as one contiguous range, from its first span's start to its last span's
   end, since an engine row takes one contiguous range: the reasoning between its spans (what the
   segmenter left unprobed) is deleted (padded, hidden) with them, and its effect is in the block's
   drop. k starts at round(√n), which balances the block pass (k rows) against refining one block
   (n/k rows), and shrinks until the block pass fits the budget. If what the block pass leaves
   cannot pay for refining any block (the second base pass alone is most of it on short traces),
   the block pass takes the budget instead: the most blocks that fit, found by bisection (the
   block pass costs more with more blocks), and nothing is refined.
2. Block pass: the base pass plus one exact row per block.
3. Refinement: blocks of two or more spans, highest (signed) drop first, since the spans that earn
   weight are those whose removal hurts the answer, get one exact row per span while the budget
   lasts. A block that no longer fits is skipped and the next tried: later spans cost fewer tokens,
   and a lower-drop block made exact is still more right. Refining pays one more base pass.
4. A block of one span is exact already (its range is the span). A span of an unrefined block gets
   the block's drop times its share of the block's span tokens, so those drops add up to the
   block's and the per-token drop the weight schemes read (`weights.py`) is the same on all of them;
   its `exact` flag is False.

The budget is the job's `feed_tokens`: ceil(refine_budget x the exact cost), but never less than
one block of all spans costs, the least that yields a drop. A budget that affords the exact pass
gets it (refine_budget=1.0, one span). The block pass and the second base pass are overhead, so
refine saves most on traces with many spans; with few, a budget of 0.5 often buys the block pass only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property

from ccapo.jobs import Cancelled, EngineJob, JobScores, Progress

Exact = Callable[[Sequence[EngineJob], Cancelled, Progress | None], list[JobScores | None]]


@dataclass(frozen=True)
class Plan:
    """One job's coarse pass: `blocks[b]` holds indices into the job's spans, in position order."""

    job: EngineJob
    blocks: list[list[int]]

    @cached_property
    def block_job(self) -> EngineJob:
        """The job whose rows are the blocks, each one contiguous range."""
        spans = self.job.spans
        ranges = [(spans[block[0]][0], spans[block[-1]][1]) for block in self.blocks]
        return replace(self.job, spans=ranges, estimator="exact")

    @cached_property
    def left(self) -> int:
        """Feed tokens of the job's budget the block pass leaves."""
        return self.job.feed_tokens - self.block_job.exact_feed_tokens

    @cached_property
    def refine_costs(self) -> list[int]:
        """Each block's refinement: one row per span (the first refined block also pays a base pass)."""
        rows = [len(b.tokens) for b in self.job.branches()]
        return [sum(rows[i] for i in block) for block in self.blocks]

    def fine_job(self, members: list[int]) -> EngineJob:
        """The job whose rows are the spans `members` (indices into the job's spans)."""
        return replace(self.job, spans=[self.job.spans[i] for i in members], estimator="exact")


def plan(job: EngineJob) -> Plan:
    """The blocks of a job: one per span when its budget affords the exact pass, else about √n
    blocks, fewer while the block pass would exceed the budget (one block always fits), or the
    most blocks that fit when no block could be refined beside them."""
    order = sorted(range(len(job.spans)), key=lambda i: job.spans[i])
    if job.exact_feed_tokens <= job.feed_tokens:
        return Plan(job, [[i] for i in order])

    def fits(k: int) -> bool:
        return Plan(job, groups(order, k)).block_job.exact_feed_tokens <= job.feed_tokens

    k = max(1, round(math.sqrt(len(order))))
    while k > 1 and not fits(k):
        k -= 1
    if not _refinable(Plan(job, groups(order, k))):
        low, high = k, len(order) - 1  # k fits; n blocks (the exact pass) do not
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if fits(middle) else (low, middle - 1)
        k = low
    return Plan(job, groups(order, k))


def groups(order: list[int], k: int) -> list[list[int]]:
    """`order` cut into k consecutive groups whose sizes differ by at most one, larger ones first."""
    size, extra = divmod(len(order), k)
    bounds = [b * size + min(b, extra) for b in range(k + 1)]
    return [order[bounds[b] : bounds[b + 1]] for b in range(k)]


def _refinable(plan: Plan) -> bool:
    """Whether the cheapest multi-span block's refinement fits what the block pass leaves."""
    costs = [cost for cost, block in zip(plan.refine_costs, plan.blocks, strict=True) if len(block) > 1]
    return bool(costs) and len(plan.job.ids) + min(costs) <= plan.left


def to_refine(plan: Plan, coarse: JobScores) -> list[int]:
    """The blocks whose spans get exact rows: multi-span blocks, highest drop first, each that fits
    what the block pass left of the budget (the first one chosen also pays a base pass)."""
    left = plan.left
    ranked = sorted(
        (b for b, block in enumerate(plan.blocks) if len(block) > 1),
        key=lambda b: (coarse.masked_logprobs[b], b),  # lowest masked score = highest drop
    )
    chosen: list[int] = []
    for b in ranked:
        cost = plan.refine_costs[b] + (0 if chosen else len(plan.job.ids))
        if cost <= left:
            chosen.append(b)
            left -= cost
    return sorted(chosen)


def refine_scores(
    exact: Exact, jobs: Sequence[EngineJob], cancelled: Cancelled, progress: Progress | None = None
) -> list[JobScores | None]:
    """Each job's scores, aligned with `jobs`; None for a job `cancelled(i)` dropped.

    Every job's block pass runs in one `exact` call, then every refinement in a second, so the
    engine batches rows across traces in both. `progress` counts finished jobs.
    """
    plans = [plan(job) for job in jobs]
    coarse = exact([p.block_job for p in plans], cancelled, None)
    chosen = [[] if scores is None else to_refine(p, scores) for p, scores in zip(plans, coarse, strict=True)]
    members = [[i for b in blocks for i in p.blocks[b]] for p, blocks in zip(plans, chosen, strict=True)]
    pending = [j for j, m in enumerate(members) if m]
    settled = len(jobs) - len(pending)
    if progress is not None:
        progress(settled, len(jobs))
    fine: list[JobScores | None] = [None] * len(jobs)
    if pending:
        step = None if progress is None else lambda k, _n: progress(settled + k, len(jobs))
        refined = exact([plans[j].fine_job(members[j]) for j in pending], lambda k: cancelled(pending[k]), step)
        for j, scores in zip(pending, refined, strict=True):
            fine[j] = scores
    results: list[JobScores | None] = []
    for j, p in enumerate(plans):
        lost = coarse[j] is None or (bool(members[j]) and fine[j] is None) or cancelled(j)
        results.append(None if lost else _combine(p, coarse[j], members[j], fine[j]))
    return results


def _combine(plan: Plan, coarse: JobScores, members: list[int], fine: JobScores | None) -> JobScores:
    """Span scores from the block pass and the refinement (over `members`, in that order)."""
    spans = plan.job.spans
    base = coarse.base_logprob
    masked = [0.0] * len(spans)
    exact = [False] * len(spans)
    for b, block in enumerate(plan.blocks):
        drop = base - coarse.masked_logprobs[b]
        tokens = sum(spans[i][1] - spans[i][0] for i in block)
        for i in block:
            masked[i] = base - drop * (spans[i][1] - spans[i][0]) / tokens
            exact[i] = len(block) == 1
    if fine is not None:
        for i, value in zip(members, fine.masked_logprobs, strict=True):
            masked[i], exact[i] = value, True
    fed = coarse.forward_tokens + (fine.forward_tokens if fine is not None else 0)
    return JobScores(base, masked, fed, exact)
