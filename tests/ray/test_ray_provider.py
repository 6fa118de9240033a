"""The RL adapters' WeightProvider through a Ray Serve handle: the in-process weights; policy sync on every replica."""

from __future__ import annotations

import time

import httpx
import torch
from ccapo_adapters.provider import CounterfactualConfig, WeightProvider
from ccapo_client import RayScorer
from ray_app import ADMIN_KEY, API_KEY, RayApp
from transformers import AutoModelForCausalLM, AutoTokenizer

from ccapo import Scorer
from ccapo.examples import load_examples


def test_a_provider_with_a_handle_gives_the_in_process_weights_and_syncs_every_replica(ray_app: RayApp) -> None:
    tiny_a = str(ray_app.root / "tiny-a")
    tokenizer = AutoTokenizer.from_pretrained(tiny_a)
    traces = load_examples()[:3]
    prompt_ids = [tokenizer(t.prompt).input_ids for t in traces]
    completion_ids = [tokenizer(t.completion, add_special_tokens=False).input_ids for t in traces]

    config = CounterfactualConfig(
        provider="ray", api_key=API_KEY, admin_key=ADMIN_KEY, sync_every=1, sync_dir=str(ray_app.root / "policy")
    )
    provider = WeightProvider.from_handle(config, ray_app.handle)
    local = WeightProvider(CounterfactualConfig(), Scorer.from_pretrained(tiny_a))
    through_ray = provider.weights(prompt_ids, completion_ids)
    expected = local.weights(prompt_ids, completion_ids)
    assert through_ray.errors == expected.errors == [None] * len(traces)
    assert not torch.all(expected.weights == 1.0)  # some spans were scored, so the comparison means something
    torch.testing.assert_close(through_ray.weights, expected.weights, atol=1e-4, rtol=0)

    # Policy sync: the trainer saves the policy under a model root, and every replica loads it.
    policy = AutoModelForCausalLM.from_pretrained(tiny_a)
    before = int(provider.scorer.model_info().version)
    assert provider.maybe_sync(policy, tokenizer, step=1)
    served = ray_app.replicas()
    assert all(r["model_id"] == "policy" and r["version"] == before + 1 for r in served.values()), served
    synced = provider.weights(prompt_ids, completion_ids)
    torch.testing.assert_close(synced.weights, expected.weights, atol=1e-4, rtol=0)  # the policy is tiny-a


def test_a_swap_through_the_handle_is_pending_past_its_wait_and_never_cancelled(ray_app: RayApp) -> None:
    """`RayScorer.swap_model` leaves the swap call running in the cluster past its own wait (a pending
    swap, scoring on meanwhile), where a timed-out `load_model` would cancel it."""
    scorer = RayScorer(ray_app.handle, api_key=API_KEY, admin_key=ADMIN_KEY)
    before = scorer.model_info()
    target = "tiny-a" if before.id.endswith("tiny-b") else "tiny-b"
    swap = scorer.swap_model(target, wait_s=0)
    assert swap.status == "pending" and swap.model is None
    swap = scorer.swap_status(swap, wait_s=120)
    assert swap.status == "live" and swap.model.id == target
    assert swap.model.version == scorer.model_info().version == str(int(before.version) + 1)


def test_over_http_prefer_respond_async_answers_202_and_the_swap_is_polled_until_every_replica_serves_it(
    ray_app: RayApp,
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    before = httpx.get(f"{ray_app.url}/v1/model", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    target = "tiny-a" if before["id"].endswith("tiny-b") else "tiny-b"
    prefer = {**admin, "Prefer": "respond-async"}
    response = httpx.post(f"{ray_app.url}/v1/model", json={"model": target}, headers=prefer, timeout=30)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending" and response.headers["Preference-Applied"] == "respond-async"
    again = httpx.post(f"{ray_app.url}/v1/model", json={"model": target}, headers=prefer, timeout=30)
    assert again.status_code == 409  # the registry's lease is held for the swap under way
    assert httpx.get(f"{ray_app.url}/v1/model/swaps/nope", headers=admin).status_code == 404
    location = f"{ray_app.url}{response.headers['Location']}"
    deadline = time.monotonic() + 120
    while (state := httpx.get(location, headers=admin).json())["status"] == "pending":
        assert time.monotonic() < deadline, "the swap never settled"
        time.sleep(0.2)
    assert state["status"] == "live" and int(state["version"]) == int(before["version"]) + 1
    served = ray_app.replicas()
    assert all(r["version"] == int(state["version"]) for r in served.values()), served
