"""`CounterfactualConfig`: one weighting configuration, where the arm decides the scheme and defaults agree."""

from __future__ import annotations

import logging

import pytest
import torch
from accelerate import Accelerator
from ccapo_adapters import CounterfactualConfig, WeightProvider
from ccapo_adapters.batch import arm_scheme
from ccapo_adapters.config import DEFAULT_SCHEME, SECTION, section_of
from ccapo_adapters.names import SCORE_SECONDS, WEIGHT_HISTOGRAM, policy_lag
from ccapo_trainer.config import TrainConfig
from ccapo_trainer.distributed import Processes, weight_metrics

from ccapo import ScoringConfig


@pytest.mark.parametrize(
    ("weighting", "scheme", "applied"),
    [
        ("counterfactual", None, "normalized"),
        ("counterfactual", "paper", "paper"),
        ("counterfactual", "normalized", "normalized"),
        ("inverted", None, "inverted"),
        ("inverted", "paper", "inverted"),  # the paper scheme's control: what configs/paper.yaml shares with its arms
        ("inverted", "inverted", "inverted"),
        ("random", "paper", "random"),
        ("uniform", "paper", "paper"),  # scores nothing: any scheme goes
    ],
)
def test_the_arm_decides_the_scheme(weighting, scheme, applied):
    config = CounterfactualConfig(weighting=weighting, scheme=scheme)
    assert config.weight_scheme == applied
    scoring = ScoringConfig.model_validate(config.scoring_config())
    assert scoring.weights.scheme == applied


@pytest.mark.parametrize(
    ("weighting", "scheme", "message"),
    [
        ("inverted", "normalized", "contradicts scheme 'normalized'"),
        ("random", "normalized", "contradicts scheme 'normalized'"),
        ("random", "inverted", "contradicts scheme 'inverted'"),
        ("counterfactual", "inverted", "set weighting 'inverted'"),
        ("counterfactual", "uniform", "set weighting 'uniform'"),
    ],
)
def test_a_scheme_that_contradicts_the_arm_is_an_error(weighting, scheme, message):
    with pytest.raises(ValueError, match=message):
        CounterfactualConfig(weighting=weighting, scheme=scheme)
    with pytest.raises(ValueError, match=message):  # in the scoring config's own spelling too
        CounterfactualConfig(weighting=weighting, scoring={"weights": {"scheme": scheme}})
    with pytest.raises(ValueError, match=message):  # and in the batch function every adapter calls
        arm_scheme(weighting, scheme)


def test_the_scheme_has_one_place():
    spelled = CounterfactualConfig(scoring={"weights": {"scheme": "paper", "boost": 2.0}, "max_spans": 4})
    assert spelled.scheme == "paper" and spelled.scoring == {"weights": {"boost": 2.0}, "max_spans": 4}
    assert spelled == CounterfactualConfig(scheme="paper", scoring={"weights": {"boost": 2.0}, "max_spans": 4})
    with pytest.raises(ValueError, match=r"scheme and scoring\.weights\.scheme are both set"):
        CounterfactualConfig(scheme="paper", scoring={"weights": {"scheme": "normalized"}})
    core = ScoringConfig(intervention="pad", weights={"scheme": "paper"})  # a core config object: its scheme counts
    from_core = CounterfactualConfig(scoring=core)
    assert from_core.scheme == "paper" and from_core.scoring["intervention"] == "pad"
    assert ScoringConfig.model_validate(from_core.scoring_config()) == core


def test_the_old_separate_fields_move_into_scoring_with_a_warning():
    with pytest.warns(FutureWarning, match=r"segmenter=\.\.\.\) is deprecated"):
        config = CounterfactualConfig(segmenter="sentence", scoring={"max_spans": 4})
    assert config.scoring == {"max_spans": 4, "segmenter": "sentence"}
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match=r"intervention and scoring\.intervention"):
        CounterfactualConfig(intervention="pad", scoring={"intervention": "delete"})


def test_defaults_and_the_sync_rule():
    config = CounterfactualConfig()
    assert (config.weighting, config.weight_scheme, config.provider) == ("counterfactual", DEFAULT_SCHEME, "inprocess")
    assert DEFAULT_SCHEME == "normalized"
    remote = {"provider": "remote", "server_url": "http://x"}
    # Unset sync_every: every step once there is a sync_dir, no sync without one; 0 is kept as said.
    assert CounterfactualConfig(**remote).sync_every is None
    assert CounterfactualConfig(**remote, sync_dir="/d").sync_every == 1
    assert CounterfactualConfig(**remote, sync_dir="/d", sync_every=0).sync_every == 0
    assert CounterfactualConfig(provider="ray", sync_dir="/d").sync_every == 1
    assert CounterfactualConfig(sync_dir="/d").sync_every is None  # in-process: the scorer is the policy
    with pytest.raises(ValueError, match="in-process scoring is the policy itself"):
        CounterfactualConfig(sync_every=1, sync_dir="/d")


def test_uniform_needs_no_scorer_server_or_sync():
    config = CounterfactualConfig(weighting="uniform", provider="remote", sync_every=3)
    assert not config.scores
    assert WeightProvider.create(config).scorer is None
    assert WeightProvider.create(CounterfactualConfig(weighting="uniform", provider="ray")).scorer is None


def test_server_urls_come_as_a_string_a_comma_list_or_a_list():
    urls = ["http://a:8000", "http://b:8000"]
    assert CounterfactualConfig(provider="remote", server_url=" http://a:8000 , http://b:8000,").server_url == urls
    assert CounterfactualConfig(provider="remote", server_url=urls).server_url == urls
    assert CounterfactualConfig(provider="remote", server_url="http://a:8000").server_url == "http://a:8000"
    with pytest.raises(ValueError, match="needs server_url"):
        CounterfactualConfig(provider="remote", server_url=" , ")


def test_settings_round_trip_through_json():
    """verl's section and OpenRLHF's JSON carry the same fields, `ray_app` included."""
    config = CounterfactualConfig(
        weighting="inverted", provider="ray", ray_app="scorer", sync_dir="/d", scoring={"max_spans": 3}
    )
    assert CounterfactualConfig.model_validate_json(config.model_dump_json()) == config
    with pytest.raises(ValueError, match="max_spanz"):  # a typo in a field name fails at once
        CounterfactualConfig.model_validate({"max_spanz": 3})


def test_a_remote_scorer_that_will_not_follow_the_policy_is_announced(server_url, caplog):
    with caplog.at_level(logging.WARNING, logger="ccapo_adapters.provider"):
        WeightProvider.remote(CounterfactualConfig(provider="remote", server_url=server_url))
        warned = [r.getMessage() for r in caplog.records]
        WeightProvider.remote(CounterfactualConfig(provider="remote", server_url=server_url, sync_every=0))
    assert len(warned) == 1 and "not the policy being trained" in warned[0] and "sync_dir" in warned[0]
    assert len(caplog.records) == 1  # sync_every=0 says it on purpose: no warning


def test_the_section_is_counterfactual_everywhere_and_its_old_verl_name_loads_with_a_warning():
    settings = {"weighting": "uniform"}
    assert section_of({SECTION: settings, "trainer": {}}) == settings and section_of({"trainer": {}}) == {}
    with pytest.warns(FutureWarning, match="'ccapo' is now 'counterfactual'"):
        assert section_of({"ccapo": settings}) == settings
    with pytest.raises(ValueError, match="keep one"):
        section_of({"ccapo": settings, SECTION: settings})
    assert SECTION in TrainConfig.model_fields  # ccapo train's section has the same name


def test_the_trainer_and_the_adapters_name_the_weight_metrics_alike(scorer, tokenizer):
    ids = [tokenizer("What is 3 + 4?").input_ids], [tokenizer("3 + 4 = 7.\n#### 7", add_special_tokens=False).input_ids]
    provider = WeightProvider(CounterfactualConfig(), scorer)
    batch = provider.weights(*ids)
    adapter = provider.metrics(batch)
    trainer = weight_metrics(Processes(Accelerator(cpu=True)), batch, torch.ones_like(batch.weights, dtype=torch.bool))
    assert adapter.keys() - trainer.keys() == {SCORE_SECONDS} and trainer.keys() - adapter.keys() == {WEIGHT_HISTOGRAM}
    assert all(key.startswith("ccapo/weights/") for key in trainer) and trainer["ccapo/weights/scored_share"] == 1.0
    assert policy_lag(5, 3) == 2.0 and policy_lag(0, None) == 0.0
