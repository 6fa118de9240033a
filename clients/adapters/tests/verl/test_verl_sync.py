"""Policy sync beside verl's own checkpoints: the trainer's `global_step_N` survives a sync and resumes.

The actor is the tiny llama under FSDP2 on CPU (gloo, one rank) with verl's real
`FSDPCheckpointManager`: it writes the trainer's checkpoints (verl's real `_save_checkpoint`, with
`max_actor_ckpt_to_keep=1`), the sync's HF weights and, on resume (verl's real `_load_checkpoint`),
reads them back. Two thin stand-ins remain, for what needs GPUs: `EngineOnCPU` for verl's FSDP
engine and `ActorGroupOnCPU` for the Ray worker group of actor ranks.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import torch
from ccapo_adapters import CounterfactualConfig, WeightProvider
from ccapo_adapters.verl_sync import SyncError, hf_folder
from ccapo_adapters.verl_trainer import CounterfactualPPOTrainerSync, sync_policy
from conftest import verl_config
from live_server import free_port
from omegaconf import OmegaConf
from torchdata.stateful_dataloader import StatefulDataLoader
from verl.single_controller.base import Worker
from verl.utils.checkpoint.checkpoint_manager import find_latest_ckpt_path
from verl.utils.checkpoint.fsdp_checkpoint_manager import FSDPCheckpointManager

pytestmark = pytest.mark.usefixtures("transfer_queue")

TRAINER_CONTENTS = ["model", "optimizer", "extra"]  # verl's default: no HF model in the trainer's checkpoints


class EngineOnCPU:
    """Stands for verl's FSDP engine (`workers/engine/fsdp/transformer_impl.py`), whose save and load go to
    its checkpoint manager, here the real one; what it adds around them (moving offloaded parameters to
    the GPU and back, a barrier over ranks) needs a GPU."""

    def __init__(self, manager: FSDPCheckpointManager):
        self.checkpoint_manager = manager

    def save_checkpoint(self, local_path, hdfs_path=None, global_step=0, max_ckpt_to_keep=None):
        self.checkpoint_manager.save_checkpoint(local_path, hdfs_path, global_step, max_ckpt_to_keep)

    def load_checkpoint(self, local_path, hdfs_path=None, del_local_after_load=True):
        self.checkpoint_manager.load_checkpoint(local_path, hdfs_path, del_local_after_load)


class ActorGroupOnCPU:
    """Stands for the trainer's `actor_rollout_wg`, a Ray worker group of `ActorRolloutRefWorker`s on GPUs:
    one rank, in this process. Its calls run what that worker runs: saves and loads on its engine
    (worker -> `TrainingWorker` -> engine), and `execute_all_sync` verl's own `Worker` method."""

    def __init__(self, engine: EngineOnCPU):
        self.worker = SimpleNamespace(actor=SimpleNamespace(engine=engine))

    def save_checkpoint(self, local_path, hdfs_path=None, global_step=0, max_ckpt_to_keep=None):
        self.worker.actor.engine.save_checkpoint(local_path, hdfs_path, global_step, max_ckpt_to_keep)

    def load_checkpoint(self, local_path, hdfs_path=None, del_local_after_load=False):
        self.worker.actor.engine.load_checkpoint(local_path, hdfs_path, del_local_after_load)

    def execute_all_sync(self, method_name: str, *args, **kwargs):
        return [getattr(Worker, method_name)(self.worker, *args, **kwargs)]


@pytest.fixture(scope="module")
def fsdp_manager(tiny_model_dir: str):
    """verl's FSDPCheckpointManager over the tiny llama, sharded by FSDP2 over one CPU rank."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        fully_shard(model, mesh=init_device_mesh("cpu", (1,)))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        contents = {"save_contents": TRAINER_CONTENTS, "load_contents": TRAINER_CONTENTS}
        yield FSDPCheckpointManager(
            model, optimizer, None, AutoTokenizer.from_pretrained(tiny_model_dir), OmegaConf.create(contents)
        )
    finally:
        torch.distributed.destroy_process_group()


def trainer_with(manager: FSDPCheckpointManager, checkpoints: Path, *overrides: str) -> CounterfactualPPOTrainerSync:
    config = verl_config(
        f"trainer.default_local_dir={checkpoints}",
        "trainer.max_actor_ckpt_to_keep=1",
        "trainer.resume_mode=auto",
        *overrides,
    )
    trainer = CounterfactualPPOTrainerSync(config)
    trainer.actor_rollout_wg = ActorGroupOnCPU(EngineOnCPU(manager))
    trainer.train_dataloader = StatefulDataLoader(list(range(8)), batch_size=2)
    return trainer


def files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_sync_leaves_the_trainers_checkpoint_intact_and_resumable(fsdp_manager, server_url, model_root, tmp_path):
    sync_dir = model_root / "verl-fsdp-sync"
    trainer = trainer_with(fsdp_manager, tmp_path / "checkpoints")
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
    assert fsdp_manager.previous_saved_paths == [str(saved)]
    assert fsdp_manager.checkpoint_save_contents == TRAINER_CONTENTS
    loaded = hf_folder(str(sync_dir / "ccapo_policy_update_50"), "fsdp")
    assert {"config.json", "model.safetensors"} <= set(os.listdir(loaded))
    assert not any(name.startswith(("optim", "extra")) for name in os.listdir(Path(loaded).parent))
    assert httpx.get(f"{server_url}/v1/model").json()["version"] != served

    resumed = trainer_with(fsdp_manager, tmp_path / "checkpoints")
    assert find_latest_ckpt_path(str(tmp_path / "checkpoints")) == str(saved.parent)
    resumed._load_checkpoint()  # verl's own resume: the actor's model and optimizer from global_step_50
    assert resumed.global_steps == 50

    trainer.global_steps = 61  # ten updates on: the next sync replaces the last one's folder
    assert sync_policy(trainer, provider, updates=60)
    assert sorted(os.listdir(sync_dir)) == ["ccapo_policy_update_60"]
    trainer.global_steps = 100
    trainer._save_checkpoint()  # the trainer's own retention still counts only its own checkpoints
    latest = tmp_path / "checkpoints" / "global_step_100" / "actor"
    assert not saved.exists() and fsdp_manager.previous_saved_paths == [str(latest)]


def test_the_hf_folder_of_each_backend():
    assert hf_folder("/s/actor", "fsdp2") == "/s/actor/huggingface"
    assert hf_folder("/s/actor", "megatron") == "/s/actor/model/huggingface"
    with pytest.raises(SyncError, match=r"actor_rollout_ref\.actor\.strategy"):
        hf_folder("/s/actor", "veomni")


def test_a_backend_that_writes_no_hf_weights_stops_the_run_at_the_first_sync(
    fsdp_manager, server_url, model_root, tmp_path
):
    """As verl's Megatron actor without its model bridge: the save leaves no model/huggingface."""
    trainer = trainer_with(fsdp_manager, tmp_path / "checkpoints", "actor_rollout_ref.actor.strategy=megatron")
    sync_dir = model_root / "verl-megatron-sync"
    provider = WeightProvider.remote(
        CounterfactualConfig(
            provider="remote", server_url=server_url, admin_key="admin", sync_every=1, sync_dir=str(sync_dir)
        )
    )
    trainer.global_steps = 1
    registered = list(fsdp_manager.previous_saved_paths)
    with pytest.raises(SyncError, match="use_mbridge"):
        sync_policy(trainer, provider, updates=0)
    assert provider.synced_step is None and fsdp_manager.previous_saved_paths == registered
