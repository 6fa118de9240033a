"""Test support: verl's real actor workers on CPU, built the way verl's v1 trainer builds them.

`actor_worker_group` is `trainer_base.py`'s `_setup` for the actor alone: verl's
`ActorRolloutRefWorker` wrapped by `create_colocated_worker_cls` into a `WorkerDict`, one per
bundle of a `RayResourcePool`, in a `RayWorkerGroup`, split with `spawn` into the role's group,
then `init_model` (verl's FSDP2 engine and its `FSDPCheckpointManager`). The Ray session must
carry `cpu_platform.verl_cpu_env()` so that the workers run on verl's CPU platform.

The functions below run on the actor ranks (through the group's role-prefixed
`execute_with_func_generator`); they live here, not in a test file, so that a Ray worker can
import them without a test's fixtures.
"""

from __future__ import annotations

from typing import Any

import ray
from omegaconf import DictConfig
from verl.single_controller.ray import (
    RayClassWithInitArgs,
    RayResourcePool,
    RayWorkerGroup,
    create_colocated_worker_cls,
)
from verl.trainer.ppo.utils import Role
from verl.workers.engine_workers import ActorRolloutRefWorker

# What a model needs on CPU: no flash-attention (CUDA only), no packed sequences (flash-attention's), the
# CPU rollout (`cpu_rollout`) on one rank.
CPU_MODEL_OVERRIDES = (
    "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
    "actor_rollout_ref.model.use_remove_padding=false",
    "actor_rollout_ref.actor.strategy=fsdp2",
    "actor_rollout_ref.rollout.name=ccapo_cpu",
    "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
)


def actor_worker_group(config: DictConfig, role: Role, ranks: int = 1) -> Any:
    """verl's colocated worker group of `ranks` actor workers for `role`, its models built."""
    pool = RayResourcePool([ranks], use_gpu=False, max_colocate_count=1)
    worker = RayClassWithInitArgs(cls=ray.remote(ActorRolloutRefWorker), config=config, role=str(role))
    group = RayWorkerGroup(
        resource_pool=pool, ray_cls_with_init=create_colocated_worker_cls({str(role): worker}), device_name="cpu"
    )
    actor = group.spawn(prefix_set={str(role)})[str(role)]
    actor.init_model()
    return actor


def end(group: Any) -> None:
    """Stop the group's Ray actors (the FSDP engines and their process group go with them)."""
    for worker in group.workers:
        ray.kill(worker)


def manager_state(worker: Any) -> tuple[list[str], list[str]]:
    """On an actor rank: its checkpoint manager's saved paths and save contents."""
    manager = worker.actor.engine.checkpoint_manager
    return list(manager.previous_saved_paths), list(manager.checkpoint_save_contents)
