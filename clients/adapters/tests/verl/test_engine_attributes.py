"""Policy sync finds each verl engine's checkpoint manager under the name verl's own engine gives it.

The names are read from verl's engine sources (`workers/engine/<backend>/transformer_impl.py`):
the attribute each engine assigns its `...CheckpointManager(...)` to and saves through. The
Megatron engine cannot be imported here (it needs Megatron-Core and CUDA), so its source is read,
not run; the engine handed to `save_hf_weights` carries the manager under that name, and records
the save the engine would hand on to it.
"""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest
from ccapo_adapters.verl_sync import SyncError, checkpoint_manager, save_hf_weights


def engine_source(backend: str) -> Path:
    import verl

    return Path(verl.__file__).parent / "workers" / "engine" / backend / "transformer_impl.py"


def manager_attributes(source: Path) -> set[str]:
    """`X` for every `self.X = SomethingCheckpointManager(...)` in the engine's source."""
    names = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
            continue
        called = node.value.func
        if not (isinstance(called, ast.Name) and called.id.endswith("CheckpointManager")):
            continue
        for target in node.targets:
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
                names.add(target.attr)
    return names


@pytest.mark.parametrize("backend", ["fsdp", "megatron"])
def test_sync_saves_through_the_manager_under_the_name_verls_engine_uses(backend, tmp_path):
    source = engine_source(backend)
    names = manager_attributes(source)
    assert len(names) == 1, f"{source} builds its checkpoint manager as {names}"
    (name,) = names
    assert f"self.{name}.save_checkpoint(" in source.read_text()  # the engine's save goes through it

    manager = SimpleNamespace(checkpoint_save_contents=["model", "optimizer"], previous_saved_paths=["/ckpt/step_1"])
    saved = []

    def save_checkpoint(path, hdfs_path=None, global_step=0, max_ckpt_to_keep=None):
        saved.append((path, list(manager.checkpoint_save_contents)))
        manager.previous_saved_paths.append(path)

    engine = SimpleNamespace(**{name: manager}, save_checkpoint=save_checkpoint)
    assert checkpoint_manager(engine) is manager
    save_hf_weights(SimpleNamespace(actor=SimpleNamespace(engine=engine)), str(tmp_path))
    assert saved == [(str(tmp_path), ["hf_model"])]
    assert manager.checkpoint_save_contents == ["model", "optimizer"]  # put back, and the sync path forgotten
    assert manager.previous_saved_paths == ["/ckpt/step_1"]


def test_an_engine_without_a_known_manager_names_what_to_set():
    with pytest.raises(SyncError, match="sync_every=0"):
        checkpoint_manager(SimpleNamespace())
