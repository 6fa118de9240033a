"""verl's own trainers with counterfactual weights, registered where `main_ppo` looks them up.

verl 0.9 runs the v1 trainers (`trainer.use_v1: true`): `TaskRunnerV1` builds
`get_trainer_cls(config.trainer.v1.trainer_mode)`. Importing this module registers
"ccapo_sync", "ccapo_colocate_async" and "ccapo_separate_async": verl's three trainers with
`_compute_advantage` extended, so the advantages in TransferQueue are weighted before the critic
or actor update reads them. The weights themselves never enter TransferQueue: the workers see
only advantages, as in stock verl. The settings come from the config's `ccapo` section
(`CounterfactualConfig`'s fields; `ray_app` names the Ray Serve application of `provider: ray`).

Policy sync: every `sync_every` actor updates each actor rank writes its HF weights under
`sync_dir` (`ccapo_adapters.verl_sync`), outside the trainer's checkpoints, and the scorer loads
them, so the scorer must see `sync_dir` on a shared filesystem and allow it in its model roots.

Updates are counted from verl's own counters (`actor_updates`): one per global step in `sync` and
`colocate_async`, `parameter_sync_step` per global step in `separate_async`, whose step runs that
many mini-batch updates, each through `_compute_advantage`.

verl builds the trainer inside a `@ray.remote` TaskRunner, another process than the driver's:
`ccapo_adapters.verl_runner.CounterfactualTaskRunner` imports this module there, no setup hook.

`CounterfactualActorUpdate` does the same for the deprecated `RayPPOTrainer` (`use_v1: false`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
import transfer_queue as tq
from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDict
from verl.plugin.platform import get_platform
from verl.trainer.ppo.v1 import PPOTrainerColocateAsync, PPOTrainerSeparateAsync, PPOTrainerSync, register_trainer

from ccapo_adapters.config import section_of
from ccapo_adapters.placement import check_groups_fit, free_per_node
from ccapo_adapters.provider import WeightProvider, provider_from_settings
from ccapo_adapters.verl import fill_token_weights, weight_advantages, weight_response_rows
from ccapo_adapters.verl_sync import remove_older_policies, write_policy

logger = logging.getLogger(__name__)

ROW_FIELDS = ["prompts", "responses", "response_mask", "advantages"]


def provider_from_config(section: Mapping[str, Any] | DictConfig) -> WeightProvider:
    """The provider a config's `counterfactual` section describes (`provider_from_settings`)."""
    settings = OmegaConf.to_container(section, resolve=True) if isinstance(section, DictConfig) else section
    return provider_from_settings(settings)


def actor_updates(trainer: Any) -> int:
    """Actor updates before the one under way, from a v1 trainer's own counters (see the module docstring)."""
    return (trainer.global_steps - 1) * trainer.parameter_sync_step + trainer.local_trigger_step


def sync_policy(trainer: Any, provider: WeightProvider, updates: int) -> bool:
    """If `sync_every` is due, write the actor's HF weights under `sync_dir` and have the scorer load them.

    A scorer that refuses or cannot be reached is retried at the next update (`load_policy`);
    a backend that writes no HF weights stops the run (`verl_sync.SyncError`). At every update, the
    folders the scorer no longer reads are deleted, however their swaps ended (live late, failed,
    superseded): only the one it serves and one still loading stay.
    """
    loaded = False
    if provider.sync_due(updates):  # looks again at a pending push first
        folder = write_policy(trainer, provider.config.sync_dir, updates)
        loaded = provider.load_policy(folder, updates)
    if provider.config.sync_every and provider.config.sync_dir:
        remove_older_policies(provider.config.sync_dir, keep=provider.policies_in_use())
    return loaded


class CounterfactualAdvantage:
    """Mixin for a verl v1 `PPOTrainer`: advantages weighted right after `_compute_advantage`.

    `weight_provider` is built in `init()` from the config's `ccapo` section unless set before.
    The provider sees the actor updates made so far (`actor_updates`): `ccapo/policy_lag_steps`
    is 0 when the scorer holds the policy the next update starts from.
    """

    weight_provider: WeightProvider | None = None
    base_mode: str  # the verl trainer mode this class extends

    def __init__(self, config: DictConfig) -> None:
        # TaskRunnerV1 chose this class by its "ccapo_*" name; verl's own code then branches on the mode
        # ("sync" or not: replay buffer, TransferQueue checkpoints), so from here on it is the base mode.
        config.trainer.v1.trainer_mode = self.base_mode
        super().__init__(config)

    def init(self) -> None:
        super().init()
        if self.weight_provider is None:
            self.weight_provider = provider_from_config(section_of(self.config))

    def _init_resource_pool_mgr(self) -> None:
        super()._init_resource_pool_mgr()
        # verl waits on its per-node placement groups without a timeout: with the scorer's replicas in the
        # cluster, say now if they cannot be placed (ccapo_adapters.placement).
        resource = get_platform().ray_resource_name()
        check_groups_fit(self.resource_pool_manager.resource_pool_spec, free_per_node(resource), resource)

    def _compute_advantage(self, batch: Any, metrics: dict) -> Any:
        batch = super()._compute_advantage(batch, metrics)
        updates = actor_updates(self)
        sync_policy(self, self.weight_provider, updates)
        rows = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=ROW_FIELDS)
        padding = [bool(tag.get("is_padding", False)) for tag in batch.tags]  # verl's upsampled rows
        weighted, weight_metrics = weight_response_rows(
            *(rows[name].unbind() for name in ROW_FIELDS), self.weight_provider, updates, padding=padding
        )
        advantages = torch.nested.as_nested_tensor(weighted, layout=torch.jagged)
        fields = TensorDict({"advantages": advantages}, batch_size=len(batch))
        batch = tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=fields)
        metrics.update(weight_metrics)
        return batch


@register_trainer("ccapo_sync")
class CounterfactualPPOTrainerSync(CounterfactualAdvantage, PPOTrainerSync):
    """verl's synchronous trainer (`trainer_mode: sync`) with counterfactual weights."""

    base_mode = "sync"


@register_trainer("ccapo_colocate_async")
class CounterfactualPPOTrainerColocateAsync(CounterfactualAdvantage, PPOTrainerColocateAsync):
    """verl's `colocate_async` trainer with counterfactual weights."""

    base_mode = "colocate_async"


@register_trainer("ccapo_separate_async")
class CounterfactualPPOTrainerSeparateAsync(CounterfactualAdvantage, PPOTrainerSeparateAsync):
    """verl's `separate_async` trainer with counterfactual weights."""

    base_mode = "separate_async"


class CounterfactualActorUpdate:
    """Mix into verl's deprecated `RayPPOTrainer` (`use_v1: false`): weights applied just before each actor update.

        class Trainer(CounterfactualActorUpdate, RayPPOTrainer): ...
        trainer = Trainer(...); trainer.weight_provider = WeightProvider.remote(config)

    At `_update_actor` the batch holds advantages, so the weights apply to every PPO epoch and
    mini-batch of the step; `ccapo_weights` is dropped before the batch goes to the workers.
    """

    weight_provider: WeightProvider

    def _update_actor(self, batch: Any) -> Any:
        updates = self.global_steps - 1  # one actor update per step in the legacy trainer
        sync_policy(self, self.weight_provider, updates)
        metrics = fill_token_weights(batch, self.weight_provider, step=updates)
        weight_advantages(batch)
        output = super()._update_actor(batch)
        output.meta_info.setdefault("metrics", {}).update(metrics)
        return output
