"""The verl adapter inside verl 0.9.1's own trainers, scoring on a real ccapo server.

The v1 trainer (`verl.trainer.ppo.v1`, what `main_ppo` runs) is built from verl's own config and
driven through its real `_compute_advantage` (verl's GRPO on rows in a real TransferQueue) and
`_update_actor`. The actor worker group (`actor_rollout_wg`) is `ActorOnCPU`, a recorder: it reads
the batch from TransferQueue as verl's workers do, so the tests can compare what reached the actor
row by row, which the real group does not report. verl's real worker group runs in
test_verl_sync.py (policy sync) and test_recipe_on_cpu.py (the recipe's training steps).
"""

from __future__ import annotations

import pytest
import torch
import transfer_queue as tq
from adapter_traces import COMPLETIONS, PROMPTS, encode
from ccapo_adapters import CounterfactualConfig, WeightProvider, score_token_batch
from ccapo_adapters.verl_trainer import CounterfactualPPOTrainerSync
from ccapo_client import RemoteScorer
from conftest import verl_config
from omegaconf import OmegaConf
from tensordict import TensorDict
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.padding_utils import upsample_batch_to_divisible_size
from verl.trainer.ppo.v1 import PPOTrainerSync, get_trainer_cls
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
from verl.utils.tensordict_utils import list_of_dict_to_tensordict

pytestmark = pytest.mark.usefixtures("transfer_queue")

CLIP = {"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 3.0}


class ActorOnCPU:
    """Records what `_update_actor` hands verl's actor worker group (see the module docstring)."""

    def __init__(self):
        self.seen_fields: set[str] = set()

    def update_actor(self, batch):
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id)
        self.seen_fields = set(data.keys())
        self.advantages = [row.clone() for row in data["advantages"].unbind()]
        return {"metrics": {"mfu": 0.0}}


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


SEPARATE_ASYNC = (
    "trainer.v1.trainer_mode=ccapo_separate_async",
    "data.train_batch_size=8",
    "actor_rollout_ref.actor.ppo_mini_batch_size=2",  # parameter_sync_step (4) mini-batches of 2 prompts
    "actor_rollout_ref.rollout.nnodes=1",
    "actor_rollout_ref.rollout.n_gpus_per_node=1",
    "actor_rollout_ref.rollout.checkpoint_engine.backend=nccl",
)


@pytest.mark.parametrize(
    ("overrides", "updates_per_step"),
    [
        (("trainer.v1.trainer_mode=ccapo_sync",), 1),
        (("trainer.v1.trainer_mode=ccapo_colocate_async",), 1),
        (SEPARATE_ASYNC, 4),
    ],
    ids=["sync", "colocate_async", "separate_async"],
)
def test_updates_are_counted_from_verls_counters_in_every_mode(server_url, tokenizer, overrides, updates_per_step):
    """verl's `PPOTrainer.step` runs `_step_once` (sample, ..., `_compute_advantage`, `_update_actor`) once per
    `local_trigger_step` in range(`parameter_sync_step`); the scorer, never synced, lags by the updates so far."""
    rows, keys = rollout_rows(tokenizer, observation=[])
    trainer = get_trainer_cls(overrides[0].rpartition("=")[2])(verl_config(*overrides))
    assert trainer.parameter_sync_step == updates_per_step  # verl's own reading of its config
    trainer.weight_provider = remote(server_url, sync_every=0)
    lags = []
    for step in (1, 2):
        trainer.global_steps = step
        for trigger in range(trainer.parameter_sync_step):
            trainer.local_trigger_step = trigger
            metrics: dict = {}
            trainer._compute_advantage(put(rows, keys, f"{trainer.trainer_mode}-{step}-{trigger}-"), metrics)
            lags.append(metrics["ccapo/policy_lag_steps"])
    assert lags == [float(n) for n in range(2 * updates_per_step)]


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


def test_verls_padding_rows_are_not_scored_and_keep_their_advantages(server_url, tokenizer):
    """verl pads a batch to a multiple of its data-parallel size with synthetic rows (tag `is_padding`)."""
    rows, keys = rollout_rows(tokenizer, observation=[])
    trainer = CounterfactualPPOTrainerSync(verl_config())
    trainer.weight_provider = remote(server_url)
    trainer.global_steps = 1
    batch = upsample_batch_to_divisible_size(put(rows, keys, "padded-"), 6, tokenizer.eos_token_id)
    padding = [bool(tag.get("is_padding")) for tag in batch.tags]
    assert padding == [False] * 4 + [True] * 2
    stock = advantages_of(PPOTrainerSync._compute_advantage(trainer, batch, {}))
    metrics: dict = {}
    ours = advantages_of(trainer._compute_advantage(batch, metrics))
    assert metrics["ccapo/weights/scored_share"] == 1.0 and metrics["ccapo/weights/scored_traces"] == 4.0
    for row in (4, 5):
        torch.testing.assert_close(ours[row], stock[row])


class NegativeScorer:
    """The real server's scorer, with one token's weight turned negative: the fault the guard is for
    (no weight scheme of ccapo's gives one)."""

    def __init__(self, server_url: str):
        self.scorer = RemoteScorer(server_url)

    def score(self, traces, config=None):
        results = self.scorer.score(traces, config)
        weights = list(results[0].token_weights)
        weights[0] = -1.0
        results[0] = results[0].model_copy(update={"token_weights": weights})
        return results


def test_negative_weights_leave_their_row_uniform_and_training_goes_on(server_url, tokenizer, caplog):
    rows, keys = rollout_rows(tokenizer, observation=[])
    trainer = CounterfactualPPOTrainerSync(verl_config())
    trainer.weight_provider = WeightProvider(CounterfactualConfig(provider="remote", server_url=server_url), None)
    trainer.weight_provider.scorer = NegativeScorer(server_url)
    trainer.global_steps = 1
    stock = advantages_of(PPOTrainerSync._compute_advantage(trainer, put(rows, keys, "negative-stock-"), {}))
    with caplog.at_level("WARNING", logger="ccapo_adapters.verl"):
        ours = advantages_of(trainer._compute_advantage(put(rows, keys, "negative-"), {}))
    assert "negative token weights" in caplog.text
    torch.testing.assert_close(ours[0], stock[0])  # the faulty row: uniform
    assert any(not torch.allclose(ours[row], stock[row]) for row in range(1, 4))  # the others: weighted
