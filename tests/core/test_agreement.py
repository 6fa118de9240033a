"""Agreement of an approximate estimator with exact drops: the metrics, and `ccapo bench` /
`ccapo faithfulness` reporting them on a tiny model."""

from __future__ import annotations

import math

import pytest

from ccapo.agreement import agreement, drop_agreement, pearson, ranks, significant_recall, spearman, top_overlap
from ccapo.cli import main
from ccapo.faithfulness import InterventionFaithfulness, faithfulness_table
from ccapo.result import AnswerRegion, SpanImportance, TraceImportance


def test_ranks_share_ties():
    assert ranks([3.0, 1.0, 3.0, 2.0]).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_spearman_known_values():
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 - 6 * 2 / (4 * 15)
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(1.5 / math.sqrt(3))  # tied ranks 1.5, 1.5, 3
    assert spearman([0.1, 5.0, 7.0], [1, 2, 100]) == pytest.approx(1.0)  # ranks, not values
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3])) and math.isnan(spearman([1], [2]))
    with pytest.raises(ValueError, match="one length"):
        spearman([1, 2], [1, 2, 3])


def test_top_overlap():
    exact = [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    assert top_overlap([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], exact) == 0.0
    assert top_overlap([6.0, 5.0, 0.0, 3.5, 1.0, 0.0], exact) == pytest.approx(2 / 3)
    assert top_overlap([2.0, 1.0], [1.0, 2.0]) == 1.0  # two spans: the top 3 is all of them


def test_significant_recall_counts_the_spans_that_matter():
    exact = [3.0, -0.6, 0.2, 0.1, 0.4]  # S = {0, 1}: |drop| >= 0.5, either sign
    assert significant_recall([2.0, -1.0, 0.0, 0.0, 0.0], exact) == 1.0
    assert significant_recall([2.0, 0.1, 0.0, 0.0, 0.9], exact) == 0.5  # span 4 took span 1's place
    assert significant_recall([0.0, 0.0, 5.0, 4.0, 0.0], exact) == 0.0
    assert math.isnan(significant_recall([1.0, 2.0], [0.1, 0.2]))  # no span matters: the trace does not count


def test_pearson_known_values():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert math.isnan(pearson([1, 1], [1, 2])) and math.isnan(pearson([1], [1]))


def test_agreement_compares_recall_and_normalized_weights():
    exact = [_result([3.0, 0.1, 0.0, 0.0]), _result([0.1, 0.2, 0.1, 0.0])]  # the second has no significant span
    same = agreement("horizon", exact, exact)
    assert same.recall == 1.0 and same.recall_traces == 1
    assert same.drop_pearson == pytest.approx(1.0) and same.weight_pearson == pytest.approx(1.0)
    assert same.weight_mad == 0.0
    missed = agreement("horizon", [_result([0.1, 3.0, 0.0, 0.0]), _result([0.1, 0.2, 0.1, 0.0])], exact)
    assert missed.recall == 0.0 and missed.weight_mad > 0 and missed.weight_pearson < 1.0


def _result(drops: list[float], ok: bool = True) -> TraceImportance:
    spans = [SpanImportance(i, i + 1, i, i + 1, "x", "sentence", -1.0 - d, d, exact=False) for i, d in enumerate(drops)]
    n = len(drops)
    return TraceImportance(
        status="ok" if ok else "unscorable",
        completion="x" * (n + 1),
        tokens=["x"] * (n + 1),
        token_weights=[1.0] * (n + 1),
        spans=spans,
        answer=AnswerRegion(n, n + 1, n, n + 1, "x", "####") if ok else None,
    )


def test_agreement_averages_over_traces_and_skips_unscorable():
    exact = [_result([3.0, 2.0, 1.0, 0.0]), _result([0.0, 1.0, 2.0, 3.0]), _result([1.0], ok=False)]
    estimated = [_result([3.0, 2.0, 1.0, 0.0]), _result([0.0, 2.0, 1.0, 3.0]), _result([1.0], ok=False)]
    found = agreement("gradient", estimated, exact)
    assert found.traces == 2
    assert found.spearman == pytest.approx((1.0 + 0.8) / 2)
    assert found.top_overlap == 1.0 and found.top_match == 1.0  # the same top-3 set, in another order
    worse = agreement("gradient", [_result([0.0, 1.0, 2.0, 3.0])], exact[:1])
    assert worse.spearman == pytest.approx(-1.0) and worse.top_overlap == pytest.approx(2 / 3) and worse.top_match == 0


def test_agreement_refuses_results_of_other_spans():
    with pytest.raises(ValueError, match="different spans"):
        agreement("gradient", [_result([1.0, 2.0])], [_result([1.0, 2.0, 3.0])])
    assert math.isnan(drop_agreement("gradient", []).spearman)


def test_faithfulness_table_shows_the_comparison():
    from rich.console import Console

    from ccapo.agreement import Agreement

    rows = [
        InterventionFaithfulness("delete", 0.9, 3, 2, 4),
        InterventionFaithfulness("delete", 0.7, 2, 1, 4, "gradient", Agreement("gradient", 0.654, 0.5, 0.25, 4)),
    ]
    console = Console(record=True, width=140)
    console.print(faithfulness_table(rows))
    text = console.export_text()
    assert "gradient" in text and "0.654" in text and "0.500" in text and "0.700" in text


def test_bench_compares_an_estimator_with_exact(tiny_model_dir, capsys):
    args = ["bench", "-n", "2", "--no-reference", "--estimator", "horizon", "--model", tiny_model_dir]
    assert main([*args, "--segmenter", "sentence"]) == 0
    out = capsys.readouterr().out
    assert "horizon against the exact engine" in out and "Spearman" in out and "top-3 overlap" in out


def test_faithfulness_compares_estimators_with_exact(tiny_model_dir, capsys):
    args = ["faithfulness", "-n", "2", "--interventions", "delete", "--model", tiny_model_dir]
    assert main([*args, "--estimators", "horizon", "refine"]) == 0
    out = capsys.readouterr().out
    assert "horizon" in out and "refine" in out and "Spearman vs exact" in out
