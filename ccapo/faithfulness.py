"""`ccapo faithfulness`: does the scorer rank calculation lines above planted filler lines?

Gold GSM8K-style solutions get neutral filler sentences inserted as lines of their own; every
reasoning line is probed as one span. A faithful intervention gives the calculations the answer
is computed from larger drops than the fillers, whose removal cannot change the answer.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from statistics import fmean
from typing import TYPE_CHECKING

from rich.table import Table

from ccapo.agreement import TOP_K, Agreement, agreement
from ccapo.config import ScoringConfig
from ccapo.gsm import LabeledLine, gsm_symbolic_problems, insert_fillers, math_prompt
from ccapo.result import TraceImportance
from ccapo.trace import Trace

if TYPE_CHECKING:
    from ccapo.scorer import Scorer

logger = logging.getLogger(__name__)


@dataclass
class InterventionFaithfulness:
    """How well one intervention's drops separate calculation lines from filler lines.

    `auc`: probability that a calculation line's drop beats a filler line's (pooled over traces,
    ties count 1/2; NaN when either kind is missing). `calc_above_filler`: traces whose mean
    calculation drop exceeds their mean filler drop. `final_calc_first`: traces whose last
    calculation line has a strictly higher drop than every other line. `traces`: scored traces.
    `estimator`: how the drops were estimated; `agreement`: an approximate one's against exact's.
    """

    intervention: str
    auc: float
    calc_above_filler: int
    final_calc_first: int
    traces: int
    estimator: str = "exact"
    agreement: Agreement | None = None


def build_faithfulness_traces(n: int, seed: int = 0, n_fillers: int = 2) -> tuple[list[Trace], list[list[LabeledLine]]]:
    """`n` gold solutions with fillers inserted, each probed on exactly its labeled lines."""
    rng = random.Random(seed)
    traces: list[Trace] = []
    labels: list[list[LabeledLine]] = []
    for problem in gsm_symbolic_problems(n, seed):
        completion, lines = insert_fillers(problem.solution, n_fillers, rng)
        traces.append(
            Trace(
                prompt=math_prompt(problem.question),
                completion=completion,
                reference_answer=problem.answer,
                spans=[(line.start, line.end) for line in lines],
            )
        )
        labels.append(lines)
    return traces, labels


def mann_whitney_auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """P(positive > negative) + P(tie) / 2 over all pairs; NaN when a side is empty."""
    if not positives or not negatives:
        return math.nan
    wins = sum((p > q) + 0.5 * (p == q) for p in positives for q in negatives)
    return wins / (len(positives) * len(negatives))


def _labeled_drops(result: TraceImportance, lines: list[LabeledLine]) -> list[tuple[str, float]]:
    # The scorer returns one span per given span, sorted by position, as the lines already are.
    if len(result.spans) != len(lines):
        raise ValueError(
            f"the result has {len(result.spans)} spans for {len(lines)} labeled lines: "
            "score the traces from build_faithfulness_traces, whose spans are the labeled lines"
        )
    return [(line.label, span.drop) for line, span in zip(lines, result.spans, strict=True)]


def _final_calc_first(drops: list[tuple[str, float]]) -> bool:
    calc_indices = [i for i, (label, _) in enumerate(drops) if label == "calc"]
    if not calc_indices:
        return False
    last = calc_indices[-1]
    return all(drops[last][1] > drop for i, (_, drop) in enumerate(drops) if i != last)


def faithfulness_metrics(
    results: list[TraceImportance], labels: list[list[LabeledLine]], intervention: str
) -> InterventionFaithfulness:
    """Score one intervention's results against the line labels; unscorable traces are skipped."""
    if len(results) != len(labels):
        raise ValueError(f"got {len(results)} results for {len(labels)} labeled traces")
    calc_pool: list[float] = []
    filler_pool: list[float] = []
    calc_above_filler = final_calc_first = traces = 0
    for result, lines in zip(results, labels, strict=True):
        if not result.ok:
            logger.info("skipping an unscorable trace: %s", result.reason)
            continue
        drops = _labeled_drops(result, lines)
        calc = [drop for label, drop in drops if label == "calc"]
        filler = [drop for label, drop in drops if label == "filler"]
        calc_pool += calc
        filler_pool += filler
        traces += 1
        calc_above_filler += bool(calc and filler and fmean(calc) > fmean(filler))
        final_calc_first += _final_calc_first(drops)
    return InterventionFaithfulness(
        intervention=intervention,
        auc=mann_whitney_auc(calc_pool, filler_pool),
        calc_above_filler=calc_above_filler,
        final_calc_first=final_calc_first,
        traces=traces,
    )


def run_faithfulness(
    scorer: Scorer,
    n: int = 30,
    seed: int = 0,
    n_fillers: int = 2,
    interventions: Sequence[str] = ("delete", "pad", "attention"),
    progress: Callable[[str], None] | None = None,
    estimators: Sequence[str] = (),
) -> list[InterventionFaithfulness]:
    """Score the same filler-planted traces under each intervention, exactly and with each of
    `estimators` (approximate ones, compared with exact); `progress` hears each step."""
    traces, labels = build_faithfulness_traces(n, seed, n_fillers)
    rows: list[InterventionFaithfulness] = []
    for intervention in interventions:
        if progress is not None:
            progress(f"scoring {len(traces)} traces with intervention={intervention}")
        exact = scorer.score(traces, ScoringConfig(intervention=intervention))
        rows.append(faithfulness_metrics(exact, labels, intervention))
        for estimator in (e for e in estimators if e != "exact"):
            if progress is not None:
                progress(f"scoring {len(traces)} traces with intervention={intervention}, estimator={estimator}")
            results = scorer.score(traces, ScoringConfig(intervention=intervention, estimator=estimator))
            row = faithfulness_metrics(results, labels, intervention)
            rows.append(replace(row, estimator=estimator, agreement=agreement(estimator, results, exact)))
    return rows


def faithfulness_table(rows: Sequence[InterventionFaithfulness]) -> Table:
    """One row per intervention (and estimator), counts out of the traces that could be scored;
    with approximate estimators, their agreement with exact's drops too."""
    compared = any(row.estimator != "exact" for row in rows)
    table = Table(title="Calculation lines vs planted fillers")
    table.add_column("intervention")
    if compared:
        table.add_column("estimator")
    table.add_column("AUC", justify="right")
    table.add_column("calc > filler", justify="right")
    table.add_column("final calc first", justify="right")
    if compared:
        table.add_column("Spearman vs exact", justify="right")
        table.add_column(f"top-{TOP_K} overlap", justify="right")
    for row in rows:
        cells = [_number(row.auc), f"{row.calc_above_filler}/{row.traces}", f"{row.final_calc_first}/{row.traces}"]
        if compared:
            found = row.agreement
            cells = [row.estimator, *cells]
            cells += [_number(found.spearman), _number(found.top_overlap)] if found else ["", ""]
        table.add_row(row.intervention, *cells)
    return table


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"
