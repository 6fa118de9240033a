"""The verl helpers, on verl's tensor contract; against verl's own DataProto and core_algos where verl imports.

verl 0.9 pins transformers<5.11 and pulls ray, so it is not a dev dependency: the tests marked
`needs_verl` run where verl's source is importable (e.g. PYTHONPATH with `pip install --no-deps
--target` of verl, ray, omegaconf, tensordict) and are skipped elsewhere.
"""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
import torch
from adapter_traces import COMPLETIONS, PROMPTS, encode, pad
from ccapo_adapters import CounterfactualConfig, WeightProvider
from ccapo_adapters.batch import score_token_batch
from ccapo_adapters.verl import WEIGHTS_KEY, fill_token_weights, weight_advantages

needs_verl = pytest.mark.skipif(
    importlib.util.find_spec("verl") is None, reason="verl is not importable here (it pins transformers<5.11)"
)


@pytest.fixture(scope="module")
def tensors(tokenizer):
    """A verl rollout batch: left-padded prompts, right-padded responses, one attention mask over both."""
    prompt_rows, response_rows = encode(tokenizer, PROMPTS), encode(tokenizer, COMPLETIONS, eos=True)
    prompts, prompt_mask = pad(prompt_rows, tokenizer.pad_token_id, "left")
    responses, response_mask = pad(response_rows, tokenizer.pad_token_id, "right")
    return {
        "prompts": prompts,
        "responses": responses,
        "input_ids": torch.cat([prompts, responses], 1),
        "attention_mask": torch.cat([prompt_mask, response_mask], 1),
        "response_mask": response_mask,
        "advantages": torch.tensor([[1.5], [-0.5]]).expand_as(responses).clone(),
    }, (prompt_rows, response_rows)


def test_weights_sit_next_to_response_mask_and_scale_advantages(tensors, scorer):
    batch, rows = tensors
    data = SimpleNamespace(batch={k: v.clone() for k, v in batch.items()})
    provider = WeightProvider(CounterfactualConfig(), scorer)
    metrics = fill_token_weights(data, provider, step=3)
    reference = score_token_batch(scorer, *rows)
    mask = batch["response_mask"].bool()
    weights = data.batch[WEIGHTS_KEY]
    assert weights.shape == batch["responses"].shape
    for row, response in enumerate(rows[1]):
        assert weights[row][mask[row]].tolist() == pytest.approx(reference.weights[row, : len(response)].tolist())
    assert torch.all(weights[~mask] == 1.0)
    assert metrics["ccapo/weights/scored_share"] == 1.0 and "ccapo/policy_lag_steps" not in metrics

    weight_advantages(data)
    torch.testing.assert_close(data.batch["advantages"], batch["advantages"] * weights)


def test_weight_advantages_needs_filled_weights(tensors):
    with pytest.raises(KeyError, match="fill_token_weights"):
        weight_advantages(SimpleNamespace(batch=dict(tensors[0])))


@needs_verl
def test_against_verl_dataproto_and_policy_loss(tensors, server_url):
    """Weighted advantages in verl's vanilla PPO loss == verl's own per-token loss multiplier."""
    from omegaconf import OmegaConf
    from verl import DataProto
    from verl.trainer.ppo import core_algos

    batch, _ = tensors
    data = DataProto.from_dict(tensors={k: v.clone() for k, v in batch.items() if k != "advantages"})
    rewards = torch.zeros_like(batch["responses"], dtype=torch.float32)
    rewards[0, -1], rewards[1, -1] = 1.0, 0.0
    advantages, _ = core_algos.compute_grpo_outcome_advantage(
        token_level_rewards=rewards, response_mask=data.batch["response_mask"], index=["p", "p"]
    )
    data.batch["advantages"] = advantages

    provider = WeightProvider.remote(CounterfactualConfig(provider="remote", server_url=server_url))
    fill_token_weights(data, provider, step=0)
    weights = data.batch[WEIGHTS_KEY]
    assert not torch.all(weights == 1.0)
    weight_advantages(data)

    torch.manual_seed(0)
    old = torch.randn(batch["responses"].shape) * 0.1
    new = old + torch.randn(old.shape) * 0.3  # ratios beyond the clip range on some tokens
    clip = {"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 3.0}
    config = OmegaConf.create({**clip, "global_batch_info": {}})
    loss_fn = core_algos.get_policy_loss_fn("vanilla")
    mask = data.batch["response_mask"]
    ours, _ = loss_fn(old, new, data.batch["advantages"], mask, "token-mean", config)
    verls, _ = loss_fn(old, new, advantages, mask, "token-mean", config, rollout_is_weights=weights)
    torch.testing.assert_close(ours, verls)
