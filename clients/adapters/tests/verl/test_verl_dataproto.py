"""The padded-batch helpers and the legacy trainer's hook, on verl's own DataProto, GRPO and PPO loss.

`RayPPOTrainer` (verl's deprecated `use_v1: false` trainer) needs GPU worker groups to be
constructed, so the instance here is made without its constructor and given what `_update_actor`
reads: the config, the step and the actor worker group, which `ActorOnCPU` replaces.
"""

from __future__ import annotations

import pytest
import torch
from adapter_traces import COMPLETIONS, PROMPTS, encode, pad
from ccapo_adapters import CounterfactualConfig, WeightProvider, score_token_batch
from ccapo_adapters.verl import WEIGHTS_KEY, fill_token_weights, weight_advantages
from ccapo_adapters.verl_trainer import CounterfactualActorUpdate
from ccapo_client import RemoteScorer
from conftest import verl_config
from omegaconf import OmegaConf
from tensordict import TensorDict
from verl import DataProto
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.ray_trainer import RayPPOTrainer, compute_advantage
from verl.utils import tensordict_utils as tu

CLIP = {"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 3.0}


@pytest.fixture
def rollout(tokenizer) -> DataProto:
    """A verl rollout batch (left-padded prompts, right-padded responses) with GRPO advantages from verl."""
    prompt_rows = encode(tokenizer, [PROMPTS[0], PROMPTS[0], PROMPTS[1], PROMPTS[1]])
    response_rows = encode(tokenizer, [COMPLETIONS[0], COMPLETIONS[1], COMPLETIONS[1], COMPLETIONS[0]], eos=True)
    prompts, prompt_mask = pad(prompt_rows, tokenizer.pad_token_id, "left")
    responses, response_mask = pad(response_rows, tokenizer.pad_token_id, "right")
    attention = torch.cat([prompt_mask, response_mask], 1)
    scores = torch.zeros(responses.shape)
    for row, length in enumerate(response_mask.sum(1)):
        scores[row, length - 1] = float(row % 2 == 0)  # one right, one wrong per prompt
    data = DataProto.from_dict(
        tensors={
            "prompts": prompts,
            "responses": responses,
            "input_ids": torch.cat([prompts, responses], 1),
            "attention_mask": attention,
            "position_ids": (attention.cumsum(1) - 1).clamp(min=0),
            "response_mask": response_mask,
            "token_level_rewards": scores,
        },
        non_tensors={"uid": ["a", "a", "b", "b"]},
    )
    data = compute_advantage(data, core_algos.AdvantageEstimator.GRPO, num_repeat=2)
    data.meta_info["rows"] = (prompt_rows, response_rows)
    return data


def remote(server_url: str) -> WeightProvider:
    return WeightProvider.remote(CounterfactualConfig(provider="remote", server_url=server_url))


def test_weights_scale_verls_grpo_advantages_and_leave_the_batch(rollout, server_url):
    stock = rollout.batch["advantages"].clone()
    provider = remote(server_url)
    metrics = fill_token_weights(rollout, provider, step=0)
    weights = rollout.batch[WEIGHTS_KEY].clone()
    prompt_rows, response_rows = rollout.meta_info["rows"]
    expected = score_token_batch(RemoteScorer(server_url), prompt_rows, response_rows, config=provider.scoring)
    mask = rollout.batch["response_mask"].bool()
    for row, response in enumerate(response_rows):
        assert weights[row][mask[row]].tolist() == pytest.approx(expected.weights[row, : len(response)].tolist())
    assert torch.all(weights[~mask] == 1.0) and metrics["ccapo/weights/scored_share"] == 1.0

    weight_advantages(rollout)
    torch.testing.assert_close(rollout.batch["advantages"], stock * weights)
    assert WEIGHTS_KEY not in rollout.batch.keys()  # noqa: SIM118 (a TensorDict has no `in`)
    with pytest.raises(KeyError, match="fill_token_weights"):
        weight_advantages(rollout)


def test_weighted_advantages_equal_verls_per_token_loss_weights(rollout, server_url):
    """verl's vanilla PPO loss on weighted advantages == its loss with each token's loss weighted."""
    stock = rollout.batch["advantages"].clone()
    fill_token_weights(rollout, remote(server_url))
    weights = rollout.batch[WEIGHTS_KEY].clone()
    assert not torch.all(weights == 1.0)
    weight_advantages(rollout)

    torch.manual_seed(0)
    old = torch.randn(stock.shape) * 0.1
    new = old + torch.randn(old.shape) * 0.3  # ratios beyond the clip range on some tokens
    config = OmegaConf.create({**CLIP, "global_batch_info": {}})
    loss_fn = core_algos.get_policy_loss_fn("vanilla")
    mask = rollout.batch["response_mask"]
    ours, _ = loss_fn(old, new, rollout.batch["advantages"], mask, "token-mean", config)
    verls, _ = loss_fn(old, new, stock, mask, "token-mean", config, rollout_is_weights=weights)
    torch.testing.assert_close(ours, verls)


class ActorOnCPU:
    """Stands in for the GPU actor worker group: records the batch `_update_actor` sends it."""

    def update_actor(self, batch: TensorDict) -> TensorDict:
        self.batch = batch
        output = TensorDict({}, batch_size=[])
        tu.assign_non_tensor_data(output, "metrics", {"mfu": 0.0})  # what verl's workers answer
        return output


def test_the_legacy_trainers_actor_update_weights_and_drops_the_key(rollout, server_url):
    class Trainer(CounterfactualActorUpdate, RayPPOTrainer):
        pass

    trainer = Trainer.__new__(Trainer)  # see the module docstring
    trainer.config = verl_config("trainer.use_v1=false")
    trainer.global_steps = 1
    trainer.actor_rollout_wg = ActorOnCPU()
    trainer.weight_provider = remote(server_url)
    stock = rollout.batch["advantages"].clone()

    output = trainer._update_actor(rollout)
    sent = trainer.actor_rollout_wg.batch
    assert WEIGHTS_KEY not in sent.keys()  # noqa: SIM118 (a TensorDict has no `in`)
    weights = rollout.batch["advantages"] / torch.where(stock == 0, 1.0, stock)
    assert not torch.allclose(weights[stock != 0], torch.ones(int((stock != 0).sum())))
    metrics = output.meta_info["metrics"]
    assert metrics["ccapo/weights/scored_share"] == 1.0 and "perf/mfu/actor" in metrics
