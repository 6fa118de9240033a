"""Policy sync beside verl's own checkpoints: the trainer's `global_step_N` survives a sync and resumes.

The actor is verl's real `ActorRolloutRefWorker` in the colocated worker group verl's v1 trainer
builds (`create_colocated_worker_cls`, `RayWorkerGroup`, `spawn`; `cpu_workers.py`), on verl's CPU
platform (`cpu_platform.py`): the tiny llama under verl's FSDP2 engine with its real
`FSDPCheckpointManager`, one gloo rank in a Ray worker. It writes the trainer's checkpoints
(verl's real `_save_checkpoint`, `max_actor_ckpt_to_keep=1`), the sync's HF weights and, on
resume (verl's real `_load_checkpoint`), reads them back.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from ccapo_adapters import CounterfactualConfig, WeightProvider
from ccapo_adapters.verl_sync import SyncError, hf_folder
from ccapo_adapters.verl_trainer import CounterfactualPPOTrainerSync, sync_policy
from conftest import verl_config
from cpu_workers import CPU_MODEL_OVERRIDES, actor_worker_group, end, manager_state
from torchdata.stateful_dataloader import StatefulDataLoader
from verl.trainer.ppo.utils import Role
from verl.utils.checkpoint.checkpoint_manager import find_latest_ckpt_path

pytestmark = pytest.mark.usefixtures("transfer_queue")

TRAINER_CONTENTS = ["model", "optimizer", "extra"]  # verl's default: no HF model in the trainer's checkpoints
ROLE = Role.ActorRollout  # the trainer's actor role without a reference model


@pytest.fixture(scope="module")
def actor_group(tiny_model_dir: str):
    """verl's colocated group of one real actor worker (FSDP2 on CPU), as the v1 trainer builds it."""
    config = verl_config(f"actor_rollout_ref.model.path={tiny_model_dir}", *CPU_MODEL_OVERRIDES, *ACTOR_BATCH)
    group = actor_worker_group(config.actor_rollout_ref, ROLE)
    yield group
    end(group)


ACTOR_BATCH = (
    "actor_rollout_ref.actor.ppo_mini_batch_size=2",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
)


def trainer_with(group, checkpoints: Path, *overrides: str) -> CounterfactualPPOTrainerSync:
    config = verl_config(
        f"trainer.default_local_dir={checkpoints}",
        "trainer.max_actor_ckpt_to_keep=1",
        "trainer.resume_mode=auto",
        *overrides,
    )
    trainer = CounterfactualPPOTrainerSync(config)
    trainer.role_worker_mapping = {ROLE: None}  # what the trainer's `_setup` records; the class is not needed again
    trainer.actor_rollout_wg = group
    trainer.train_dataloader = StatefulDataLoader(list(range(8)), batch_size=2)
    return trainer


def on_actor(group, function, *args):
    """`function(worker, *args)` on the actor rank, through the group's role-prefixed method."""
    return group.execute_all_sync(f"{ROLE}_execute_with_func_generator", function, *args)[0]


def files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def test_verls_worker_dict_runs_a_bare_worker_method_itself_not_on_the_actor(actor_group):
    """Why the sync calls the role-prefixed method: verl's `WorkerDict` is a `Worker` itself."""
    with pytest.raises(Exception, match="'WorkerDict' object has no attribute 'actor'"):
        actor_group.execute_all_sync("execute_with_func_generator", manager_state)


def test_a_sync_leaves_the_trainers_checkpoint_intact_and_resumable(actor_group, server_url, model_root, tmp_path):
    sync_dir = model_root / "verl-fsdp-sync"
    trainer = trainer_with(actor_group, tmp_path / "checkpoints")
    provider = WeightProvider.remote(
        CounterfactualConfig(
            provider="remote", server_url=server_url, admin_key="admin", sync_every=10, sync_dir=str(sync_dir)
        )
    )
    trainer.global_steps = 50
    trainer._save_checkpoint()  # verl's own save, keeping one actor checkpoint
    saved = tmp_path / "checkpoints" / "global_step_50" / "actor"
    before = files(saved)
    assert "model_world_size_1_rank_0.pt" in before and not (saved / "huggingface" / "model.safetensors").exists()
    served = httpx.get(f"{server_url}/v1/model").json()["version"]

    trainer.global_steps = 51
    assert sync_policy(trainer, provider, updates=50)
    assert files(saved) == before  # the trainer's checkpoint is untouched, and still its manager's only one
    assert on_actor(actor_group, manager_state) == ([str(saved)], TRAINER_CONTENTS)
    loaded = hf_folder(str(sync_dir / "ccapo_policy_update_50"), "fsdp")
    assert {"config.json", "model.safetensors"} <= set(os.listdir(loaded))
    assert not any(name.startswith(("optim", "extra")) for name in os.listdir(Path(loaded).parent))
    assert httpx.get(f"{server_url}/v1/model").json()["version"] != served

    resumed = trainer_with(actor_group, tmp_path / "checkpoints")
    assert find_latest_ckpt_path(str(tmp_path / "checkpoints")) == str(saved.parent)
    resumed._load_checkpoint()  # verl's own resume: the actor's model and optimizer from global_step_50
    assert resumed.global_steps == 50

    trainer.global_steps = 61  # ten updates on: the next sync replaces the last one's folder
    assert sync_policy(trainer, provider, updates=60)
    assert sorted(os.listdir(sync_dir)) == ["ccapo_policy_update_60"]
    trainer.global_steps = 100
    trainer._save_checkpoint()  # the trainer's own retention still counts only its own checkpoints
    latest = tmp_path / "checkpoints" / "global_step_100" / "actor"
    assert not saved.exists() and on_actor(actor_group, manager_state)[0] == [str(latest)]


def test_the_hf_folder_of_each_backend():
    assert hf_folder("/s/actor", "fsdp2") == "/s/actor/huggingface"
    assert hf_folder("/s/actor", "megatron") == "/s/actor/model/huggingface"
    with pytest.raises(SyncError, match=r"actor_rollout_ref\.actor\.strategy"):
        hf_folder("/s/actor", "veomni")


def test_a_backend_that_writes_no_hf_weights_stops_the_run_at_the_first_sync(
    actor_group, server_url, model_root, tmp_path
):
    """As verl's Megatron actor without its model bridge: the save leaves no model/huggingface."""
    trainer = trainer_with(actor_group, tmp_path / "checkpoints", "actor_rollout_ref.actor.strategy=megatron")
    sync_dir = model_root / "verl-megatron-sync"
    provider = WeightProvider.remote(
        CounterfactualConfig(
            provider="remote", server_url=server_url, admin_key="admin", sync_every=1, sync_dir=str(sync_dir)
        )
    )
    trainer.global_steps = 1
    registered = on_actor(actor_group, manager_state)[0]
    with pytest.raises(SyncError, match="use_mbridge"):
        sync_policy(trainer, provider, updates=0)
    assert provider.synced_step is None and on_actor(actor_group, manager_state)[0] == registered
