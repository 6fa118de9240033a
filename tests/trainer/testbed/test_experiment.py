"""`ccapo experiment testbed --smoke`: every arm trains from the warm start and the report is written.
It checks the pipeline, never the outcome."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from ccapo_trainer.metrics import read_metrics
from ccapo_trainer.testbed.experiment import ARMS, ExperimentConfig, report, run_experiment, summarize
from cli_in_process import exit_code


@pytest.fixture(scope="module")
def testbed_cache(tmp_path_factory) -> Path:
    """One CCAPO_CACHE for this module's experiments: the smoke warm start is trained once, then reused."""
    return tmp_path_factory.mktemp("cache")


@pytest.mark.slow  # every arm trains
def test_smoke_experiment_trains_every_arm_and_writes_the_report(tmp_path, monkeypatch, testbed_cache):
    monkeypatch.setenv("CCAPO_CACHE", str(testbed_cache))
    config = ExperimentConfig.smoke()
    summary = run_experiment(config, tmp_path / "out")

    assert list(summary["arms"]) == list(ARMS)
    for arm in ARMS:
        records = read_metrics(tmp_path / "out" / "seed0" / arm)
        assert [r["step"] for r in records] == [0, 1, 2]
        assert all("eval/accuracy" in r for r in records)
        assert records[1]["ccapo/weights/span_mass"] >= records[1]["ccapo/weights/calc_mass"] >= 0
    weighted = read_metrics(tmp_path / "out" / "seed0" / "counterfactual")[1]
    assert weighted["ccapo/score_seconds"] > 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert all(f"| {arm} |" in report for arm in ARMS)
    assert (tmp_path / "out" / "accuracy.png").stat().st_size > 1000
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["arms"]["uniform"]["final_mean"] >= 0

    started = time.perf_counter()
    assert run_experiment(config, tmp_path / "out")["arms"] == summary["arms"]  # finished runs are reused
    assert time.perf_counter() - started < 15

    changed = dataclasses.replace(config, train={**config.train, "learning_rate": 3e-5})
    with pytest.raises(ValueError, match="other settings"):  # never reuse a run made with other settings
        run_experiment(changed, tmp_path / "out")


def test_summary_statistics_on_known_curves():
    def run(points, calc=0.5):
        return [
            {
                "step": s,
                "eval/accuracy": a,
                "time/step_s": 1.0,
                "ccapo/weights/calc_mass": calc,
                "ccapo/weights/span_mass": calc + 0.1,
                "scoring_overhead_pct": 10.0,
            }
            for s, a in points
        ]

    runs = {
        "uniform": {0: run([(0, 0.2), (10, 0.3), (20, 0.4)]), 1: run([(0, 0.2), (10, 0.3), (20, 0.6)])},
        "counterfactual": {0: run([(0, 0.2), (10, 0.5), (20, 0.6)]), 1: run([(0, 0.2), (10, 0.5), (20, 0.6)])},
    }
    summary = summarize(runs, ExperimentConfig(seeds=(0, 1), arms=("uniform", "counterfactual")))
    uniform, weighted = summary["arms"]["uniform"], summary["arms"]["counterfactual"]
    assert summary["uniform_final_mean"] == 0.5
    assert uniform["steps_to_uniform_final"] == 20 and weighted["steps_to_uniform_final"] == 10
    low, high = uniform["final_ci95"]
    assert low < 0.5 < high and high - 0.5 == 0.5 - low
    assert weighted["final_ci95"] == (0.6, 0.6)
    assert weighted["filler_mass"] == pytest.approx(0.1)

    assert uniform["vs_uniform"] is None
    paired = weighted["vs_uniform"]
    assert paired["seeds"] == [0, 1] and paired["final_diff"] == pytest.approx([0.2, 0.0])
    assert paired["final_diff_mean"] == pytest.approx(0.1)
    low, high = paired["final_diff_ci95"]
    assert low < 0 < 0.1 < high  # two seeds that disagree: the interval spans zero
    # Means over the evaluations after step 0: counterfactual 0.55 both seeds; uniform 0.35 and 0.45.
    assert weighted["run_mean_accuracy"] == pytest.approx(0.55) and uniform["run_mean_accuracy"] == pytest.approx(0.4)
    assert paired["run_mean_diff"] == pytest.approx([0.2, 0.1])
    text = report(summary, ExperimentConfig(seeds=(0, 1), arms=("uniform", "counterfactual")))
    assert "| counterfactual | +10.0 |" in text and "+20.0, +0.0" in text


def ccapo(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ccapo.cli", *args], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.slow  # two arms train, through the command
def test_experiment_command_takes_arms_and_training_overrides(tmp_path, testbed_cache, monkeypatch, capsys):
    env = {**os.environ, "CCAPO_CACHE": str(testbed_cache)}
    out = tmp_path / "out"
    args = ("experiment", "testbed", "--smoke", "-o", str(out), "--arms", "uniform,counterfactual")
    done = ccapo(*args, "learning_rate=3e-5", "scoring.weights.scheme=normalized", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (out / "seed0").iterdir()) == ["counterfactual", "uniform"]
    saved = yaml.safe_load((out / "seed0" / "counterfactual" / "config.yaml").read_text())
    assert saved["learning_rate"] == 3e-5 and saved["counterfactual"]["scheme"] == "normalized"
    assert "`learning_rate=3e-05`" in (out / "report.md").read_text()
    assert "seed 0 counterfactual step 2/2" in done.stderr  # no terminal: a log line per step

    # Mistakes fail at once, before any warm start or training.
    mistakes = [
        (["--smoke", "--arms", "nope"], "weighting"),
        (["--smoke", "learning_rate"], "key=value"),
        (["--smoke", "learning_rate=-1"], "learning_rate"),
        (["--steps", "15"], "multiple of eval_every"),  # the last step would go unevaluated
    ]
    monkeypatch.setenv("CCAPO_CACHE", str(testbed_cache))
    for bad, message in mistakes:  # in this process: a subprocess would spend seconds on imports per mistake
        assert exit_code(["experiment", "testbed", "-o", str(tmp_path / "bad"), *bad]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
