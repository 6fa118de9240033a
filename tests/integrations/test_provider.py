"""`CounterfactualConfig` and `WeightProvider`: the settings every adapter shares."""

from __future__ import annotations

import pytest

from ccapo.integrations import CounterfactualConfig, WeightProvider


def test_config_maps_to_a_scoring_config():
    config = CounterfactualConfig(
        scheme="normalized", segmenter="sentence", intervention="pad", scoring={"max_spans": 4}
    )
    scoring = config.scoring_config()
    assert (scoring.segmenter, scoring.intervention, scoring.max_spans) == ("sentence", "pad", 4)
    assert scoring.weights.scheme == "normalized"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weighting": "bogus"}, "weighting"),
        ({"provider": "remote"}, "server_url"),
        ({"provider": "remote", "server_url": "http://x", "sync_every": 2}, "sync_dir"),
        ({"sync_every": -1}, "sync_every"),
        ({"scoring": {"max_spanz": 3}}, "max_spanz"),
    ],
)
def test_bad_settings_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CounterfactualConfig(**kwargs)


def test_in_process_needs_the_policy():
    with pytest.raises(ValueError, match="policy model"):
        WeightProvider.create(CounterfactualConfig())
    assert WeightProvider.create(CounterfactualConfig(weighting="uniform"), object(), object()).scorer is None
