"""The "aligntune" preset reaches the scorer from every entry point: HTTP, the trainer config, the adapters."""

from __future__ import annotations

from ccapo_adapters.config import CounterfactualConfig
from ccapo_server.schemas import ImportanceRequest
from ccapo_trainer.config import load_config

from ccapo import ScoringConfig

TRACE = {"prompt": "2 + 2?", "completion": "2 + 2 = 4\n#### 4"}


def test_a_request_carries_the_preset() -> None:
    request = ImportanceRequest.model_validate({"traces": [TRACE], "config": {"preset": "aligntune"}})
    assert request.config == ScoringConfig(preset="aligntune")
    assert (request.config.intervention, request.config.weights.scheme) == ("pad", "paper")


def test_the_adapters_and_the_trainer_pass_it_through_with_the_authors_scheme() -> None:
    adapter = CounterfactualConfig(scoring={"preset": "aligntune"})
    assert ScoringConfig.model_validate(adapter.scoring_config()) == ScoringConfig(preset="aligntune")
    inverted = CounterfactualConfig(weighting="inverted", scoring={"preset": "aligntune"})
    assert ScoringConfig.model_validate(inverted.scoring_config()).weights.scheme == "inverted"
    train = load_config(None, ["counterfactual.scoring.preset=aligntune"])
    assert ScoringConfig.model_validate(train.counterfactual.scoring_config()).preset == "aligntune"
