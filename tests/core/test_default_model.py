"""The real default model (SmolLM2-135M-Instruct): slow on CPU, but run in CI."""

from __future__ import annotations

import pytest

from ccapo import Scorer, ScoringConfig
from ccapo.cli import main
from ccapo.faithfulness import build_faithfulness_traces, faithfulness_metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scorer(default_model_dir) -> Scorer:
    return Scorer.from_pretrained(default_model_dir)


def test_calculation_lines_outscore_filler_lines(scorer):
    """20 gold solutions, two filler lines planted in each, one span per line, "delete"."""
    traces, labels = build_faithfulness_traces(20, seed=0, n_fillers=2)
    results = scorer.score(traces, ScoringConfig(intervention="delete"))
    metrics = faithfulness_metrics(results, labels, "delete")
    assert metrics.traces == 20
    assert metrics.calc_above_filler >= 18, metrics


def test_demo_runs_on_the_default_model(default_model_dir, capsys):
    assert main(["demo", "--model", default_model_dir]) == 0
    out = capsys.readouterr().out
    assert "answer log-prob" in out and "#### 132" in out
