"""How closely an approximate estimator's span drops follow the exact ones, on the same traces.

Per trace: the Spearman rank correlation of the two drop vectors, and the overlap of their top-k
spans (the ones that earn the most weight). Averaged over the traces both scored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ccapo.result import TraceImportance

TOP_K = 3


@dataclass(frozen=True)
class Agreement:
    """An estimator against exact drops. `spearman`: mean per-trace rank correlation (traces where
    either side's drops are all equal have none and are left out; NaN if none is left).
    `top_overlap`: mean share of exact's top-k spans the estimator also puts in its top k.
    `top_match`: share of traces whose top-k sets are equal. `traces`: traces both scored."""

    estimator: str
    spearman: float
    top_overlap: float
    top_match: float
    traces: int


def ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank."""
    array = np.asarray(values, dtype=float)
    order = np.argsort(array, kind="stable")
    ranked = np.empty(len(array))
    ranked[order] = np.arange(1, len(array) + 1)
    for value in np.unique(array):
        tied = array == value
        ranked[tied] = ranked[tied].mean()
    return ranked


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Rank correlation of two equal-length vectors; NaN when either is constant or shorter than 2."""
    if len(a) != len(b):
        raise ValueError(f"spearman needs vectors of one length, got {len(a)} and {len(b)}")
    if len(a) < 2:
        return math.nan
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def top_k(values: Sequence[float], k: int = TOP_K) -> set[int]:
    """Indices of the k largest values (the earlier index wins a tie)."""
    return set(sorted(range(len(values)), key=lambda i: (-values[i], i))[:k])


def top_overlap(estimated: Sequence[float], exact: Sequence[float], k: int = TOP_K) -> float:
    """Share of exact's top k that the estimate also ranks in its top k (k is capped by the span count)."""
    k = min(k, len(exact))
    return len(top_k(estimated, k) & top_k(exact, k)) / k if k else math.nan


def agreement(
    estimator: str, estimated: Sequence[TraceImportance], exact: Sequence[TraceImportance], k: int = TOP_K
) -> Agreement:
    """Compare two scorings of the same traces, span by span; traces either could not score are skipped."""
    if len(estimated) != len(exact):
        raise ValueError(f"got {len(estimated)} estimated results for {len(exact)} exact ones")
    pairs = []
    for est, ref in zip(estimated, exact, strict=True):
        if not (est.ok and ref.ok):
            continue
        if [(s.token_start, s.token_end) for s in est.spans] != [(s.token_start, s.token_end) for s in ref.spans]:
            raise ValueError("the two results probe different spans: score the same traces with the same config")
        pairs.append(([s.drop for s in est.spans], [s.drop for s in ref.spans]))
    return drop_agreement(estimator, pairs, k)


def drop_agreement(
    estimator: str, pairs: Sequence[tuple[Sequence[float], Sequence[float]]], k: int = TOP_K
) -> Agreement:
    """`Agreement` over (estimated drops, exact drops) of each trace; traces without spans are skipped."""
    pairs = [(a, b) for a, b in pairs if b]
    correlations = [c for c in (spearman(a, b) for a, b in pairs) if not math.isnan(c)]
    overlaps = [top_overlap(a, b, k) for a, b in pairs]
    return Agreement(
        estimator=estimator,
        spearman=float(np.mean(correlations)) if correlations else math.nan,
        top_overlap=float(np.mean(overlaps)) if overlaps else math.nan,
        top_match=float(np.mean([o == 1.0 for o in overlaps])) if overlaps else math.nan,
        traces=len(pairs),
    )
