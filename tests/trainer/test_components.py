"""The run's objects, built once into `Components`: one scorer per run at most (the policy scores,
the uniform arm only segments), and the stages read each object from there."""

from __future__ import annotations

import pytest
from ccapo_trainer.components import build_components
from ccapo_trainer.rewards import WeightedRewards
from word_policy import PROBLEMS, REWARDS

from ccapo import Scorer


@pytest.mark.parametrize("weighting", ["uniform", "counterfactual", "inverted", "random"])
def test_one_scorer_per_run_at_most(train_config, monkeypatch, weighting):
    built: list[Scorer] = []
    original = Scorer.__init__

    def counted(self, *args, **kwargs):
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Scorer, "__init__", counted)
    rewards = WeightedRewards([REWARDS["mentions_answer"]], [1.0])
    run = build_components(train_config(counterfactual={"weighting": weighting}), PROBLEMS, rewards, checkpoint=None)
    [scorer] = built
    assert scorer.model is run.policy  # no second copy of the policy
    if weighting == "uniform":  # nothing is scored; segmenting alone feeds weights/calc_mass
        assert run.provider.scorer is None and run.segmenter is scorer
    else:
        assert run.provider.scorer is scorer and run.segmenter is None
    assert run.reference is None and run.state.step == 0 and run.prompts.problems == PROBLEMS
