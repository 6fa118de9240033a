import math

import pytest

from ccapo.faithfulness import (
    InterventionFaithfulness,
    build_faithfulness_traces,
    faithfulness_metrics,
    faithfulness_table,
    mann_whitney_auc,
)
from ccapo.gsm import LabeledLine
from ccapo.result import AnswerRegion, SpanImportance, TraceImportance


def _labeled(*labels: str) -> list[LabeledLine]:
    return [LabeledLine(10 * i, 10 * i + 10, label) for i, label in enumerate(labels)]  # type: ignore[arg-type]


def _result(lines: list[LabeledLine], drops: list[float]) -> TraceImportance:
    spans = [
        SpanImportance(line.start, line.end, i, i + 1, "x" * 10, "given", -1.0 - drop, drop)
        for i, (line, drop) in enumerate(zip(lines, drops, strict=True))
    ]
    n = len(lines) + 1
    answer = AnswerRegion(10 * len(lines), 10 * n, len(lines), n, "#### 4", "####")
    return TraceImportance(
        status="ok",
        completion="x" * 10 * n,
        tokens=["x"] * n,
        token_weights=[1.0] * n,
        base_logprob=-1.0,
        spans=spans,
        answer=answer,
    )


def _unscorable() -> TraceImportance:
    return TraceImportance(
        status="unscorable",
        completion="no answer",
        tokens=["no"],
        token_weights=[1.0],
        reason="no answer marker",
    )


def test_calc_always_above_filler() -> None:
    labels = [_labeled("calc", "filler", "calc"), _labeled("filler", "other", "calc")]
    results = [_result(labels[0], [2.0, 0.1, 3.0]), _result(labels[1], [0.0, 5.0, 1.0])]
    row = faithfulness_metrics(results, labels, "pad")
    assert row == InterventionFaithfulness("pad", auc=1.0, calc_above_filler=2, final_calc_first=1, traces=2)


def test_ties_count_half() -> None:
    labels = [_labeled("calc", "filler", "calc", "filler")]
    row = faithfulness_metrics([_result(labels[0], [0.5, 0.5, 0.5, 0.5])], labels, "delete")
    assert row.auc == 0.5
    assert row.calc_above_filler == 0
    assert row.final_calc_first == 0  # a tie is not "highest"


def test_mixed_ranking() -> None:
    # calc drops {1, 3}, filler drops {2, 0}: pairs won 1>0, 3>2, 3>0; lost 1<2.
    labels = [_labeled("calc", "filler", "calc", "filler")]
    row = faithfulness_metrics([_result(labels[0], [1.0, 2.0, 3.0, 0.0])], labels, "attention")
    assert row.auc == 0.75
    assert (row.calc_above_filler, row.final_calc_first, row.traces) == (1, 1, 1)


def test_unscorable_traces_are_skipped() -> None:
    labels = [_labeled("calc", "filler"), _labeled("calc", "filler")]
    row = faithfulness_metrics([_unscorable(), _result(labels[1], [-1.0, 1.0])], labels, "pad")
    assert row.traces == 1
    assert row.auc == 0.0
    assert row.calc_above_filler == 0


def test_auc_is_nan_without_fillers() -> None:
    assert math.isnan(mann_whitney_auc([1.0], []))
    labels = [_labeled("calc", "other")]
    assert math.isnan(faithfulness_metrics([_result(labels[0], [1.0, 0.0])], labels, "pad").auc)


def test_span_count_mismatch_is_an_error() -> None:
    labels = [_labeled("calc", "filler")]
    with pytest.raises(ValueError, match="labeled lines"):
        faithfulness_metrics([_result(_labeled("calc"), [1.0])], labels, "pad")


def test_built_traces_probe_the_labeled_lines() -> None:
    traces, labels = build_faithfulness_traces(3, seed=1, n_fillers=2)
    assert len(traces) == len(labels) == 3
    for trace, lines in zip(traces, labels, strict=True):
        assert trace.spans == [(line.start, line.end) for line in lines]
        assert sum(line.label == "filler" for line in lines) == 2
        assert trace.completion.endswith(f"#### {trace.reference_answer}")
    assert build_faithfulness_traces(3, seed=1, n_fillers=2) == (traces, labels)


def test_table_shows_counts() -> None:
    from rich.console import Console

    rows = [
        InterventionFaithfulness("pad", 0.875, 3, 2, 4),
        InterventionFaithfulness("delete", math.nan, 0, 0, 0),
    ]
    console = Console(record=True, width=100)
    console.print(faithfulness_table(rows))
    text = console.export_text()
    assert "0.875" in text and "3/4" in text and "2/4" in text and "n/a" in text
