"""A policy load slower than the client's read timeout is a pending swap, never an exception that ends training.

Every trainer pushes its policy through `WeightProvider.load_policy` (ccapo's trainer and TRL via
`sync`, verl and OpenRLHF with the checkpoint they saved themselves), against a real server on
loopback whose swaps load `slow_server.load_s` seconds, longer than the clients' read timeout.
"""

from __future__ import annotations

import logging
import time

import pytest
from adapter_traces import COMPLETIONS, PROMPTS, encode
from ccapo_adapters import WeightProvider
from ccapo_adapters.provider import save_merged
from ccapo_client import RemoteScorer, RequestTimeoutError
from slow_swaps import slow_sync_config, wait_until_live


def slow_provider(server, sync_dir, swap_wait_s: float = 0.2) -> WeightProvider:
    return WeightProvider.remote(slow_sync_config(server.url, sync_dir, server.client_timeout_s, swap_wait_s))


def test_a_blocking_load_past_the_timeout_is_a_typed_timeout_and_swap_model_is_pending(slow_server, llama, tokenizer):
    policy = slow_server.roots / "client-policy"
    save_merged(llama, tokenizer, policy)
    with RemoteScorer(slow_server.url, admin_key="admin", timeout=slow_server.client_timeout_s) as scorer:
        with pytest.raises(RequestTimeoutError) as raised:  # once a bare httpx.ReadTimeout
            scorer.load_model(str(policy))
        assert isinstance(raised.value, TimeoutError) and raised.value.server == slow_server.url
        time.sleep(slow_server.load_s + 1)  # that load goes on server-side; let it finish
        version = slow_server.version()
        started = time.monotonic()
        swap = scorer.swap_model(str(policy), wait_s=0.2)
        assert swap.status == "pending" and time.monotonic() - started < slow_server.client_timeout_s
        assert slow_server.version() == version  # the old model serves meanwhile
        swap = scorer.swap_status(swap, wait_s=slow_server.load_s * 10)
        assert swap.status == "live" and swap.model is not None
        assert swap.model.version == slow_server.version() == str(int(version) + 1)


@pytest.mark.parametrize("trainer", ["ccapo", "trl", "verl", "openrlhf"])
def test_a_push_slower_than_the_timeout_is_pending_and_training_goes_on(
    trainer, slow_server, llama, tokenizer, caplog
):
    """`sync` (ccapo's trainer, TRL) saves and pushes; verl and OpenRLHF save their own checkpoint and
    call `load_policy` with it. Either way the push returns False at once, scoring goes on with the
    live model with the lag counted, and the step is taken once the swap is live."""
    sync_dir = slow_server.roots / f"{trainer}-policy"
    provider = slow_provider(slow_server, sync_dir)
    version = slow_server.version()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="ccapo_adapters.provider"):
        if trainer in ("ccapo", "trl"):
            assert provider.maybe_sync(llama, tokenizer, 0) is False
        else:
            save_merged(llama, tokenizer, sync_dir)
            assert provider.sync_due(0) and provider.load_policy(str(sync_dir), 0) is False
    assert time.monotonic() - started < slow_server.load_s  # nobody waited for the load
    assert provider.pending_swap is not None and provider.synced_step is None
    assert "still loading the policy of step 0" in caplog.text
    assert not provider.sync_due(1)  # nothing is saved over the files the scorer is reading
    batch = provider.weights(encode(tokenizer, PROMPTS), encode(tokenizer, COMPLETIONS))
    assert batch.scorer_error is None and provider.scorer.last_model_version == version
    assert provider.metrics(batch, step=1)["ccapo/policy_lag_steps"] == 1.0
    wait_until_live(provider)
    assert provider.synced_step == 0 and slow_server.version() == str(int(version) + 1)
    assert provider.sync_due(1)
