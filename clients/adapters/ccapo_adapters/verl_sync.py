"""Policy sync for verl: the actor's HF weights under `sync_dir`, beside the trainer's checkpoints, never among them.

verl's checkpoint managers delete the paths they registered beyond `max_actor_ckpt_to_keep`, so a
sync saved through the trainer's `save_checkpoint` would count against, and delete, the trainer's
own `global_step_N/actor`. Here each actor rank has its engine's own checkpoint manager write the
HF model only (`save_contents: [hf_model]`, whatever the trainer saves) and then forget the path,
so its retention never sees it; no optimizer or extra state is written. The folder the scorer
loads depends on the backend (`hf_folder`); when it is missing after a save, the run stops there
with the setting to change, rather than saving again at every step.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from typing import Any

from ccapo_adapters.lora import merge_wrapped_export, peft_config_of

logger = logging.getLogger(__name__)

SYNC_PREFIX = "ccapo_policy_update_"
# Where each backend's checkpoint manager writes the HF model inside a save folder (verl 0.9.1).
HF_FOLDERS = {"fsdp": "huggingface", "fsdp2": "huggingface", "megatron": os.path.join("model", "huggingface")}
# The engine attribute holding its checkpoint manager: verl 0.9.1's Megatron engine spells it
# `checkpoint_mananager` (workers/engine/megatron/transformer_impl.py), the FSDP engine `checkpoint_manager`.
MANAGER_ATTRIBUTES = ("checkpoint_manager", "checkpoint_mananager")

# The roles verl's v1 trainer may give its actor workers, in the order it picks one (`Role`'s names).
ACTOR_ROLES = ("actor", "actor_rollout_ref", "actor_rollout")
# What makes each backend write that folder at all.
HF_SETTINGS = {
    "megatron": "actor_rollout_ref.actor.megatron.use_mbridge=true (the HF export needs verl's model bridge)",
}


class SyncError(RuntimeError):
    """Policy sync cannot work with this trainer's configuration: training stops at the first sync."""


def hf_folder(save_path: str, strategy: str) -> str:
    """The HF model folder inside `save_path` for the actor backend `strategy` (`actor_rollout_ref.actor.strategy`)."""
    if strategy not in HF_FOLDERS:
        raise SyncError(
            f"policy sync knows where verl's {sorted(HF_FOLDERS)} backends write the HF model, not "
            f"{strategy!r} (actor_rollout_ref.actor.strategy): use one of those, or set counterfactual.sync_every=0"
        )
    return os.path.join(save_path, HF_FOLDERS[strategy])


def checkpoint_manager(engine: Any) -> Any:
    """The checkpoint manager of a verl engine, under whichever of `MANAGER_ATTRIBUTES` the engine uses."""
    for name in MANAGER_ATTRIBUTES:
        manager = getattr(engine, name, None)
        if manager is not None:
            return manager
    raise SyncError(
        f"policy sync found no checkpoint manager on verl's {type(engine).__name__} (looked for "
        f"{', '.join(MANAGER_ATTRIBUTES)}): this verl version names it otherwise; set counterfactual.sync_every=0"
    )


def save_hf_weights(worker: Any, path: str) -> None:
    """On one actor rank (verl's `execute_with_func_generator`): the HF model to `path`, through its engine.

    The engine's `save_checkpoint` moves offloaded parameters in and out as for any save; the
    manager's `save_contents` and its list of saved paths are put back afterwards. A LoRA actor's
    export (the PEFT-wrapped state dict) is rewritten by rank 0 as the merged model
    (`ccapo_adapters.lora`), which is what the scorer can load.
    """
    engine = worker.actor.engine  # verl's ActorRolloutRefWorker -> TrainingWorker -> its FSDP/Megatron engine
    manager = checkpoint_manager(engine)
    contents, saved = manager.checkpoint_save_contents, list(manager.previous_saved_paths)
    manager.checkpoint_save_contents = ["hf_model"]
    try:
        engine.save_checkpoint(path, None, 0, max_ckpt_to_keep=None)
    finally:
        manager.checkpoint_save_contents = contents
        manager.previous_saved_paths = saved
    lora = peft_config_of(getattr(manager, "model", None))
    if lora is not None and getattr(manager, "rank", 0) == 0:  # the export is rank 0's, in the FSDP folder
        merge_wrapped_export(os.path.join(path, HF_FOLDERS["fsdp"]), lora)


def actor_method(trainer: Any, name: str) -> str:
    """The name under which the actor's worker group runs the actor worker's method `name`.

    verl's trainers build their workers with `create_colocated_worker_cls`: each Ray actor is a
    `WorkerDict` (itself a `Worker`) holding one worker per role, and the inner worker's methods
    are its methods prefixed with the role ("actor_rollout_execute_with_func_generator"); the bare
    name would run `Worker`'s own method on the `WorkerDict`, which has no actor. The role is the
    one verl's trainer picks for the actor (`trainer_base.py`, `_setup`).
    """
    roles = {str(role) for role in getattr(trainer, "role_worker_mapping", {})}
    for role in ACTOR_ROLES:
        prefixed = f"{role}_{name}"
        if role in roles and hasattr(trainer.actor_rollout_wg, prefixed):
            return prefixed
    return name  # a worker group of plain actor workers, not colocated


def write_policy(trainer: Any, sync_dir: str, updates: int) -> str:
    """Have every actor rank write the HF weights after `updates` updates; the folder the scorer loads."""
    path = os.path.join(sync_dir, f"{SYNC_PREFIX}{updates}")
    method = actor_method(trainer, "execute_with_func_generator")
    trainer.actor_rollout_wg.execute_all_sync(method, save_hf_weights, path)
    strategy = trainer.config.actor_rollout_ref.actor.strategy
    folder = hf_folder(path, strategy)
    if not os.path.isdir(folder):
        setting = HF_SETTINGS.get(strategy, "the actor's checkpoint settings")
        raise SyncError(
            f"policy sync asked verl's {strategy} actor for its HF weights, and {folder} was not written: "
            f"set {setting}, or counterfactual.sync_every=0 to keep the scorer's model"
        )
    return folder


def remove_older_policies(sync_dir: str, keep: Sequence[str]) -> None:
    """Delete the policy folders under `sync_dir` that hold none of the checkpoints in `keep` (the one the
    scorer serves and one still loading: `WeightProvider.policies_in_use`)."""
    if not os.path.isdir(sync_dir):
        return
    for name in os.listdir(sync_dir):
        path = os.path.join(sync_dir, name)
        if name.startswith(SYNC_PREFIX) and not any(kept.startswith(path + os.sep) for kept in keep):
            shutil.rmtree(path, ignore_errors=True)
