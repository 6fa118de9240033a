"""The verl adapter inside verl 0.9.1's own trainers, scoring on a real ccapo server.

The v1 trainer (`verl.trainer.ppo.v1`, what `main_ppo` runs) is built from verl's own config and
driven through its real `_compute_advantage` (verl's GRPO on rows in a real TransferQueue) and
`_update_actor`. The one piece replaced is the GPU actor worker group (`actor_rollout_wg`):
`ActorOnCPU` reads the batch from TransferQueue as verl's workers do and computes verl's
`compute_policy_loss_vanilla`, and its `save_checkpoint` writes the `huggingface/` folder verl's
checkpoint manager writes for `hf_model`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
import torch
import transfer_queue as tq
from adapter_traces import COMPLETIONS, PROMPTS, encode
from ccapo_adapters import CounterfactualConfig, WeightProvider, score_token_batch
from ccapo_adapters.verl_trainer import CounterfactualPPOTrainerSync, check_sync_contents
from ccapo_client import RemoteScorer
from conftest import verl_config
from omegaconf import OmegaConf
from tensordict import TensorDict
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.v1 import PPOTrainerSync, get_trainer_cls
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
from verl.utils.tensordict_utils import list_of_dict_to_tensordict

pytestmark = pytest.mark.usefixtures("transfer_queue")

CLIP = {"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 3.0}


class ActorOnCPU:
    """Stands in for verl's GPU actor worker group: the only replaced piece of the trainer."""

    def __init__(self, checkpoint_source: str | None = None):
        self.checkpoint_source = checkpoint_source
        self.seen_fields: set[str] = set()
        self.saved: list[str] = []

    def update_actor(self, batch):
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id)
        self.seen_fields = set(data.keys())
        self.advantages = [row.clone() for row in data["advantages"].unbind()]
        return {"metrics": {"mfu": 0.0}}

    def save_checkpoint(self, local_path, hdfs_path=None, global_step=0, max_ckpt_to_keep=None):
        shutil.copytree(self.checkpoint_source, Path(local_path) / "huggingface")
        self.saved.append(local_path)


def rollout_rows(tokenizer, observation: list[int]):
    """Two prompts x two samples, as verl's agent loop stores them; sample 0 of prompt 0 holds a tool turn."""
    prompts, completions = encode(tokenizer, PROMPTS), encode(tokenizer, COMPLETIONS, eos=True)
    rows, keys = [], []
    for group, prompt in enumerate(prompts):
        for sample in range(2):
            response = completions[(group + sample) % 2]
            mask = [1] * len(response)
            if group == 0 and sample == 0:  # the environment's tokens: scored, not trained on
                half = len(response) // 2
                response = response[:half] + observation + response[half:]
                mask = mask[:half] + [0] * len(observation) + mask[half:]
            scores = torch.zeros(len(response))
            scores[-1] = 1.0 if sample == 0 else 0.0  # one right, one wrong per group: nonzero GRPO advantages
            rows.append(
                {
                    "prompts": torch.tensor(prompt),
                    "responses": torch.tensor(response),
                    "response_mask": torch.tensor(mask),
                    "rm_scores": scores,
                    "uid": f"prompt{group}",
                }
            )
            keys.append(f"prompt{group}_{sample}_0")
    return rows, keys


def put(rows, keys, prefix: str):
    keys = [f"{prefix}{key}" for key in keys]
    fields, tags = list_of_dict_to_tensordict(rows), [{"status": "success"}] * len(keys)
    return tq.kv_batch_put(keys=keys, partition_id="train", fields=fields, tags=tags)


def advantages_of(batch) -> list[torch.Tensor]:
    fields = tq.kv_batch_get(keys=batch.keys, partition_id="train", select_fields=["advantages"])
    return list(fields["advantages"].unbind())


def remote(server_url: str, **settings) -> WeightProvider:
    return WeightProvider.remote(CounterfactualConfig(provider="remote", server_url=server_url, **settings))


def test_the_ccapo_trainers_are_registered_where_main_ppo_looks():
    assert get_trainer_cls("ccapo_sync") is CounterfactualPPOTrainerSync
    assert issubclass(get_trainer_cls("ccapo_colocate_async"), get_trainer_cls("colocate_async"))
    assert issubclass(get_trainer_cls("ccapo_separate_async"), get_trainer_cls("separate_async"))
    # verl's code branches on the mode name: a ccapo trainer runs as the mode it extends.
    trainer = CounterfactualPPOTrainerSync(verl_config("trainer.v1.trainer_mode=ccapo_sync"))
    assert trainer.trainer_mode == "sync" and type(trainer.replay_buffer) is ReplayBuffer


def test_v1_trainer_weights_verls_grpo_advantages(server_url, tokenizer):
    observation = encode(tokenizer, [" (calculator says: 24)"])[0]
    rows, keys = rollout_rows(tokenizer, observation)
    trainer = CounterfactualPPOTrainerSync(verl_config("trainer.v1.trainer_mode=ccapo_sync"))
    trainer.weight_provider = remote(server_url)
    trainer.global_steps = 1
    trainer.actor_rollout_wg = ActorOnCPU()

    stock = PPOTrainerSync._compute_advantage(trainer, put(rows, keys, "stock-"), {})
    metrics: dict = {}
    batch = trainer._compute_advantage(put(rows, keys, "ccapo-"), metrics)
    trainer._update_actor(batch, metrics)

    ids = [r["prompts"].tolist() for r in rows], [r["responses"].tolist() for r in rows]
    expected = score_token_batch(RemoteScorer(server_url), *ids, config=trainer.weight_provider.scoring)
    assert expected.failed == 0 and not torch.all(expected.weights == 1.0)
    for row, (ours, theirs) in enumerate(zip(advantages_of(batch), advantages_of(stock), strict=True)):
        mask = rows[row]["response_mask"].bool()
        assert theirs[mask].abs().min() > 0  # GRPO gave this row's tokens a nonzero advantage
        weights = expected.weights[row, : len(mask)]
        torch.testing.assert_close(ours[mask], theirs[mask] * weights[mask])
        torch.testing.assert_close(ours[~mask], theirs[~mask])  # the tool's tokens keep verl's advantage
    # The actor update read the weighted advantages; no ccapo field travelled to the workers.
    torch.testing.assert_close(torch.cat(trainer.actor_rollout_wg.advantages), torch.cat(advantages_of(batch)))
    assert not any(field.startswith("ccapo") for field in trainer.actor_rollout_wg.seen_fields)
    assert metrics["ccapo/weights/scored_share"] == 1.0 and metrics["ccapo/policy_lag_steps"] == 0.0
    assert "actor/perf/mfu/actor" not in metrics and "perf/mfu/actor" in metrics  # verl's own metrics still there


def test_weighted_advantages_weight_each_tokens_loss_in_verls_ppo_loss(server_url, tokenizer):
    rows, keys = rollout_rows(tokenizer, observation=[])
    trainer = CounterfactualPPOTrainerSync(verl_config())
    trainer.weight_provider = remote(server_url)
    trainer.global_steps = 1
    stock = advantages_of(PPOTrainerSync._compute_advantage(trainer, put(rows, keys, "loss-stock-"), {}))
    ours = advantages_of(trainer._compute_advantage(put(rows, keys, "loss-ccapo-"), {}))
    pad = torch.nested.to_padded_tensor
    mask = pad(torch.nested.as_nested_tensor([r["response_mask"] for r in rows], layout=torch.jagged), 0)
    stock_adv, our_adv = (pad(torch.nested.as_nested_tensor(a, layout=torch.jagged), 0.0) for a in (stock, ours))
    weights = torch.where(mask.bool(), our_adv / stock_adv, torch.ones_like(our_adv))

    torch.manual_seed(0)
    old = torch.randn(mask.shape) * 0.1
    new = old + torch.randn(mask.shape) * 0.3  # ratios beyond the clip range on some tokens
    config = OmegaConf.create({**CLIP, "global_batch_info": {}})
    loss_fn = core_algos.get_policy_loss_fn("vanilla")
    weighted, _ = loss_fn(old, new, our_adv, mask, "token-mean", config)
    per_token, _ = loss_fn(old, new, stock_adv, mask, "token-mean", config, rollout_is_weights=weights)
    torch.testing.assert_close(weighted, per_token)
    assert not torch.allclose(weights[mask.bool()], torch.ones(int(mask.sum())))


def test_policy_sync_loads_verls_hf_checkpoint_on_the_server(server_url, tokenizer, tiny_model_dir, model_root):
    rows, keys = rollout_rows(tokenizer, observation=[])
    trainer = CounterfactualPPOTrainerSync(verl_config())
    sync_dir = str(model_root / "verl-sync")
    trainer.weight_provider = remote(server_url, admin_key="admin", sync_every=2, sync_dir=sync_dir)
    trainer.actor_rollout_wg = ActorOnCPU(checkpoint_source=tiny_model_dir)
    first = httpx.get(f"{server_url}/v1/model").json()["version"]

    trainer.global_steps = 1  # no update yet: the starting policy is pushed, whatever the server held
    metrics: dict = {}
    trainer._compute_advantage(put(rows, keys, "sync1-"), metrics)
    assert trainer.actor_rollout_wg.saved == [f"{sync_dir}/global_step_1/actor"]
    assert metrics["ccapo/policy_lag_steps"] == 0.0
    started = httpx.get(f"{server_url}/v1/model").json()["version"]
    assert started != first

    trainer.global_steps = 2  # one update since: not due yet
    metrics = {}
    trainer._compute_advantage(put(rows, keys, "sync2-"), metrics)
    assert len(trainer.actor_rollout_wg.saved) == 1 and metrics["ccapo/policy_lag_steps"] == 1.0

    trainer.global_steps = 3  # two updates: the actor saves its checkpoint and the server loads it first
    metrics = {}
    trainer._compute_advantage(put(rows, keys, "sync3-"), metrics)
    assert trainer.actor_rollout_wg.saved[1:] == [f"{sync_dir}/global_step_3/actor"]
    assert httpx.get(f"{server_url}/v1/model").json()["version"] != started
    assert trainer.weight_provider.synced_step == 2 and metrics["ccapo/policy_lag_steps"] == 0.0


def test_sync_needs_verl_to_save_the_hf_model(server_url):
    provider = WeightProvider(
        CounterfactualConfig(provider="remote", server_url=server_url, sync_every=1, sync_dir="/tmp/x"), None
    )
    with pytest.raises(ValueError, match="hf_model"):
        check_sync_contents(verl_config(), provider)
    config = verl_config("actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]")
    check_sync_contents(config, provider)


def test_rows_of_other_lengths_are_refused(server_url):
    from ccapo_adapters.verl import weight_response_rows

    one = [torch.tensor([1, 2, 3])]
    with pytest.raises(ValueError, match="same length"):
        weight_response_rows(one, one, [torch.ones(2)], [torch.ones(3)], remote(server_url))


def test_the_weights_never_enter_transfer_queue(server_url, tokenizer):
    rows, keys = rollout_rows(tokenizer, observation=[])
    trainer = CounterfactualPPOTrainerSync(verl_config())
    trainer.weight_provider = remote(server_url)
    trainer.global_steps = 1
    batch = trainer._compute_advantage(put(rows, keys, "fields-"), {})
    fields = tq.kv_batch_get(keys=batch.keys, partition_id="train")
    assert isinstance(fields, TensorDict) and not any(name.startswith("ccapo") for name in fields.keys())  # noqa: SIM118
