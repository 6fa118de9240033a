"""`CounterfactualConfig` and `WeightProvider`: the settings every adapter shares."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from adapter_traces import COMPLETIONS, PROMPTS, encode
from ccapo_adapters import CounterfactualConfig, WeightProvider
from ccapo_adapters.inprocess import create_provider
from ccapo_client import RemoteScorer
from live_server import free_port, spawn_server, start_server, wait_ready

from ccapo import ScoringConfig


def test_config_maps_to_a_scoring_config():
    config = CounterfactualConfig(
        scheme="paper", segmenter="sentence", intervention="pad", scoring={"max_spans": 4}
    )
    scoring = ScoringConfig.model_validate(config.scoring_config())
    assert (scoring.segmenter, scoring.intervention, scoring.max_spans) == ("sentence", "pad", 4)
    assert scoring.weights.scheme == "paper"
    # The adapters' default keeps the mean weight at 1 (the paper's scheme raises it to about 2-3).
    assert ScoringConfig.model_validate(CounterfactualConfig().scoring_config()).weights.scheme == "normalized"


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


def test_an_outage_warns_once_and_its_end_once(tiny_model_dir, tokenizer, caplog):
    """A server that goes down leaves uniform weights with one warning, not one per step; so does its return."""
    prompts, completions = encode(tokenizer, PROMPTS), encode(tokenizer, COMPLETIONS)
    port = free_port()
    server = spawn_server(tiny_model_dir, port=port)
    wait_ready(server)
    config = CounterfactualConfig(provider="remote", server_url=server.url)
    provider = WeightProvider(config, RemoteScorer(server.url, max_retries=0))
    assert provider.weights(prompts, completions).scorer_error is None
    server.discard()
    with caplog.at_level(logging.WARNING, logger="ccapo_adapters.provider"):
        for _ in range(2):
            batch = provider.weights(prompts, completions)
            assert batch.scorer_error and torch.all(batch.weights == 1.0) and batch.failed == 2
        back = spawn_server(tiny_model_dir, port=port)
        try:
            wait_ready(back)
            assert provider.weights(prompts, completions).scorer_error is None
        finally:
            back.discard()
    messages = [record.getMessage() for record in caplog.records if record.name == "ccapo_adapters.provider"]
    assert len(messages) == 2 and "uniform weights" in messages[0] and "answers again" in messages[1]


@pytest.fixture(scope="module")
def sync_server(tiny_model_dir, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """A server that takes policy pushes (admin key "admin") from under its model root, shared by the sync tests."""
    roots = tmp_path_factory.mktemp("roots")
    with start_server(tiny_model_dir, {"CCAPO_ADMIN_KEY": "admin", "CCAPO_MODEL_ROOTS": str(roots)}) as url:
        yield url, roots


def test_policy_sync_settings_are_checked_at_construction(sync_server, tmp_path):
    """A wrong admin key or a sync_dir outside the server's model roots fails before training, not at the first sync."""
    url, roots = sync_server
    version = httpx.get(f"{url}/v1/model").json()["version"]

    def remote(admin_key: str, sync_dir: Path) -> WeightProvider:
        config = CounterfactualConfig(
            provider="remote", server_url=url, admin_key=admin_key, sync_every=1, sync_dir=str(sync_dir)
        )
        return WeightProvider.remote(config)

    assert remote("admin", roots / "checked").synced_step is None  # nothing pushed yet
    with pytest.raises(ValueError, match="admin_key"):
        remote("wrong", roots / "checked")
    with pytest.raises(ValueError, match="MODEL_ROOTS"):
        remote("admin", tmp_path / "elsewhere")
    assert httpx.get(f"{url}/v1/model").json()["version"] == version  # the checks loaded nothing


def test_a_remote_provider_checks_the_model_id_when_given(server_url):
    served = httpx.get(f"{server_url}/v1/model").json()["id"]
    provider = WeightProvider.remote(CounterfactualConfig(provider="remote", server_url=server_url, model_id=served))
    assert provider.scorer is not None
    with pytest.raises(ValueError, match=f"runs model '{served}', not the expected 'other/model'"):
        WeightProvider.remote(CounterfactualConfig(provider="remote", server_url=server_url, model_id="other/model"))


def test_the_starting_policy_is_pushed_at_step_0_and_a_failed_push_warns_and_retries(
    sync_server, llama, tokenizer, tmp_path, caplog
):
    """A server left on another checkpoint is never taken for the policy: the first due step is step 0.
    A refused push does not raise (the same in every adapter): a warning, the older model keeps scoring,
    the lag grows, and the next step tries again."""
    url, roots = sync_server
    version = httpx.get(f"{url}/v1/model").json()["version"]
    config = CounterfactualConfig(
        provider="remote", server_url=url, admin_key="admin", sync_every=2, sync_dir=str(roots / "policy")
    )
    provider = WeightProvider.remote(config)
    assert provider.sync_due(0)
    assert provider.maybe_sync(llama, tokenizer, 0) and provider.synced_step == 0
    pushed = httpx.get(f"{url}/v1/model").json()["version"]
    assert pushed != version
    assert not provider.sync_due(1) and provider.sync_due(2)
    with caplog.at_level(logging.WARNING, logger="ccapo_adapters.provider"):
        assert provider.load_policy(str(tmp_path / "outside"), 2) is False  # outside the model roots: refused
    assert provider.synced_step == 0 and provider.sync_due(3)  # retried at the next step
    assert httpx.get(f"{url}/v1/model").json()["version"] == pushed
    batch = provider.weights(encode(tokenizer, PROMPTS), encode(tokenizer, COMPLETIONS))
    assert provider.metrics(batch, step=3)["ccapo/policy_lag_steps"] == 3.0
    messages = [r.getMessage() for r in caplog.records if r.name == "ccapo_adapters.provider"]
    assert len(messages) == 1 and "policy sync at step 2 failed" in messages[0] and "tries again" in messages[0]
