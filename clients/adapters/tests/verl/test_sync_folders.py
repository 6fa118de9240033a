"""Policy sync folders are deleted however their swaps end: live late, failed or superseded.

verl's actor writes each push to a new folder under `sync_dir` (`ccapo_policy_update_N`); a real
scoring server on loopback loads each one 1 s slower than the trainer waits (`swap_wait_s` 0.1),
so every swap is pending first. Only the folder the scorer serves and one still loading may stay.
The actor ranks' HF export (verl's engine, tested with verl's own classes elsewhere) is stood in
for by a copy of the tiny llama's HF folder where the export goes, or a folder no loader can read.
Cost: one server start and five 1 s loads.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from ccapo_adapters import WeightProvider, verl_trainer
from ccapo_adapters.verl_sync import SYNC_PREFIX, hf_folder
from ccapo_adapters.verl_trainer import sync_policy
from scoring_server import READY_TIMEOUT_S, spawn_server, wait_ready
from slow_swaps import slow_sync_config, wait_until_live

LOAD_S = 1.0


@pytest.fixture
def slow_url(tiny_model_dir, model_root):
    env = {"CCAPO_ADMIN_KEY": "admin", "CCAPO_MODEL_ROOTS": str(model_root)}
    server = spawn_server(tiny_model_dir, env, load_delay_s=LOAD_S)
    try:
        wait_ready(server, READY_TIMEOUT_S)
        yield server.url
    finally:
        server.discard()


def test_only_the_served_and_the_loading_folders_stay(slow_url, tiny_model_dir, model_root, monkeypatch):
    sync_dir = model_root / "verl-sync-folders"
    broken = set()

    def write_policy(trainer, sync_dir, updates):
        """Where and what verl's FSDP actor writes: `hf_folder` of the update's folder, the HF model."""
        folder = hf_folder(os.path.join(sync_dir, f"{SYNC_PREFIX}{updates}"), "fsdp")
        shutil.copytree(tiny_model_dir, folder)
        if updates in broken:
            Path(folder, "config.json").write_text(json.dumps({"model_type": "nope"}))
        return folder

    monkeypatch.setattr(verl_trainer, "write_policy", write_policy)
    provider = WeightProvider.remote(slow_sync_config(slow_url, sync_dir, client_timeout_s=30, swap_wait_s=0.1))
    trainer = SimpleNamespace()

    def folders() -> list[int]:
        return sorted(int(name.removeprefix(SYNC_PREFIX)) for name in os.listdir(sync_dir))

    assert sync_policy(trainer, provider, 0) is False  # pending: the scorer loads it for LOAD_S
    assert sync_policy(trainer, provider, 1) is False and folders() == [0]  # nothing written over it
    wait_until_live(provider)  # live late, after swap_wait_s
    assert sync_policy(trainer, provider, 2) is False and folders() == [0, 2]  # served, loading
    wait_until_live(provider)
    assert sync_policy(trainer, provider, 3) is False and folders() == [2, 3]  # 0 superseded
    wait_until_live(provider)
    broken.add(4)
    assert sync_policy(trainer, provider, 4) is False and folders() == [3, 4]
    wait_until_live(provider)  # update 4's load fails
    assert provider.synced_step == 3
    assert sync_policy(trainer, provider, 5) is False and folders() == [3, 5]  # 4 failed: deleted
    wait_until_live(provider)
    assert sync_policy(trainer, provider, 6) is False and folders() == [5, 6]
    wait_until_live(provider)
    assert provider.synced_step == 6
