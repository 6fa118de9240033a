"""`CounterfactualConfig` and `WeightProvider`: the settings every adapter shares."""

from __future__ import annotations

import pytest
from ccapo_adapters import CounterfactualConfig, WeightProvider
from ccapo_adapters.inprocess import create_provider

from ccapo import ScoringConfig


def test_config_maps_to_a_scoring_config():
    config = CounterfactualConfig(
        scheme="normalized", segmenter="sentence", intervention="pad", scoring={"max_spans": 4}
    )
    scoring = ScoringConfig.model_validate(config.scoring_config())
    assert (scoring.segmenter, scoring.intervention, scoring.max_spans) == ("sentence", "pad", 4)
    assert scoring.weights.scheme == "normalized"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weighting": "bogus"}, "weighting"),
        ({"provider": "remote"}, "server_url"),
        ({"provider": "remote", "server_url": "http://x", "sync_every": 2}, "sync_dir"),
        ({"sync_every": -1}, "sync_every"),
        ({"provider": "ray", "sync_every": 1}, "sync_dir"),
        ({"scoring": [("max_spans", 3)]}, "mapping"),
    ],
)
def test_bad_settings_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CounterfactualConfig(**kwargs)


def test_in_process_needs_the_policy(llama, tokenizer):
    with pytest.raises(ValueError, match="policy model"):
        create_provider(CounterfactualConfig())
    with pytest.raises(ValueError, match=r"ccapo_adapters\.inprocess"):
        WeightProvider.create(CounterfactualConfig())
    assert create_provider(CounterfactualConfig(weighting="uniform"), object(), object()).scorer is None
    with pytest.raises(ValueError, match="max_spanz"):  # the scoring config fails at construction
        create_provider(CounterfactualConfig(scoring={"max_spanz": 3}), llama, tokenizer)


def test_a_ray_provider_needs_its_handle():
    with pytest.raises(ValueError, match="deployment handle"):
        WeightProvider.create(CounterfactualConfig(provider="ray"))


def test_a_remote_provider_checks_server_and_config_at_construction(server_url):
    provider = WeightProvider.remote(CounterfactualConfig(provider="remote", server_url=server_url))
    assert provider.scorer.last_model_version is not None  # the check scored one (unscorable) trace
    with pytest.raises(ValueError, match="max_spanz"):
        WeightProvider.remote(CounterfactualConfig(provider="remote", server_url=server_url, scoring={"max_spanz": 3}))
