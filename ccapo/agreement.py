"""How closely an approximate estimator's span drops follow the exact ones, on the same traces.

What training and analysis need is that every span that moves the answer a lot is found and sized
right, and that the token weights come out the same; per trace, averaged over the traces both scored:

- significant-span recall: of the spans whose exact |drop| is at least `SIGNIFICANT` nats (the set
  S), the share the estimate puts among its |S| largest |drop|s (traces with S empty don't count);
- weight agreement: Pearson correlation of the mean-1 "normalized"-scheme token weights over the
  reasoning tokens, and their mean absolute difference;
- drop Pearson; and, reported but dominated by the many small drops, Spearman and top-k overlap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ccapo.result import TraceImportance
from ccapo.scorer import token_weights
from ccapo.weights import WeightConfig

TOP_K = 3
SIGNIFICANT = 0.5  # nats of |exact drop| that make a span one that matters


@dataclass(frozen=True)
class Agreement:
    """An estimator against exact drops. `spearman`: mean per-trace rank correlation (traces where
    either side's drops are all equal have none and are left out; NaN if none is left).
    `top_overlap`: mean share of exact's top-k spans the estimator also puts in its top k.
    `top_match`: share of traces whose top-k sets are equal. `traces`: traces both scored.
    `recall`: mean significant-span recall over the `recall_traces` traces with a significant span.
    `drop_pearson`: mean per-trace Pearson of the drops. `weight_pearson`, `weight_mad`: mean
    per-trace Pearson and mean absolute difference of the normalized token weights (NaN when only
    drops were compared)."""

    estimator: str
    spearman: float
    top_overlap: float
    top_match: float
    traces: int
    recall: float = math.nan
    recall_traces: int = 0
    drop_pearson: float = math.nan
    weight_pearson: float = math.nan
    weight_mad: float = math.nan


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


def pearson(a: Sequence[float], b: Sequence[float]) -> float:
    """Linear correlation of two equal-length vectors; NaN when either is constant or shorter than 2."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) != len(y):
        raise ValueError(f"pearson needs vectors of one length, got {len(x)} and {len(y)}")
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def significant_recall(estimated: Sequence[float], exact: Sequence[float], threshold: float = SIGNIFICANT) -> float:
    """Share of the spans with |exact drop| >= threshold that the estimate ranks among its that many
    largest |drop|s (the earlier span wins a tie); NaN when no span reaches the threshold."""
    significant = {i for i, d in enumerate(exact) if abs(d) >= threshold}
    if not significant:
        return math.nan
    return len(top_k([abs(d) for d in estimated], len(significant)) & significant) / len(significant)


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
    """Compare two scorings of the same traces, span by span and by their normalized token weights;
    traces either could not score are skipped."""
    if len(estimated) != len(exact):
        raise ValueError(f"got {len(estimated)} estimated results for {len(exact)} exact ones")
    pairs, weights = [], []
    for est, ref in zip(estimated, exact, strict=True):
        if not (est.ok and ref.ok):
            continue
        if [(s.token_start, s.token_end) for s in est.spans] != [(s.token_start, s.token_end) for s in ref.spans]:
            raise ValueError("the two results probe different spans: score the same traces with the same config")
        pairs.append(([s.drop for s in est.spans], [s.drop for s in ref.spans]))
        weights.append((_reasoning_weights(est), _reasoning_weights(ref)))
    found = drop_agreement(estimator, pairs, k)
    return replace(
        found,
        weight_pearson=_mean(pearson(a, b) for a, b in weights),
        weight_mad=_mean(float(np.abs(a - b).mean()) if len(a) else math.nan for a, b in weights),
    )


def drop_agreement(
    estimator: str, pairs: Sequence[tuple[Sequence[float], Sequence[float]]], k: int = TOP_K
) -> Agreement:
    """`Agreement` of the drops alone, over (estimated drops, exact drops) of each trace; traces
    without spans are skipped."""
    pairs = [(a, b) for a, b in pairs if b]
    overlaps = [top_overlap(a, b, k) for a, b in pairs]
    recalls = [r for r in (significant_recall(a, b) for a, b in pairs) if not math.isnan(r)]
    return Agreement(
        estimator=estimator,
        spearman=_mean(spearman(a, b) for a, b in pairs),
        top_overlap=_mean(overlaps),
        top_match=_mean(o == 1.0 for o in overlaps),
        traces=len(pairs),
        recall=_mean(recalls),
        recall_traces=len(recalls),
        drop_pearson=_mean(pearson(a, b) for a, b in pairs),
    )


def _mean(values: Iterable[float]) -> float:
    """Mean of the values that are not NaN; NaN if none is left."""
    kept = [float(v) for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def _reasoning_weights(result: TraceImportance) -> np.ndarray:
    """The mean-1 normalized-scheme token weights of the reasoning tokens (before the answer)."""
    end = result.answer.token_start if result.answer is not None else len(result.tokens)
    return np.asarray(token_weights(result, WeightConfig(scheme="normalized"))[:end], dtype=float)
