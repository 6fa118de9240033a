"""Checkpoints that resume exactly: weights (or the LoRA adapter), optimizer, scheduler, RNG states
(one set per process of a multi-process run), the data position and the metrics so far.

Layout: `OUTPUT_DIR/checkpoints/step-N/` holds `model/` (a `save_pretrained` directory any HF tool
loads), `state.pt` and `config.yaml`. A checkpoint is written to a temporary name and renamed, so a
run killed while saving never leaves a half-written checkpoint that `--resume` would pick.
"""

from __future__ import annotations

import logging
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"


@dataclass
class DataPosition:
    """Where the sampler stands: epoch `epoch`, next index `cursor` into that epoch's permutation."""

    epoch: int = 0
    cursor: int = 0


@dataclass
class TrainState:
    step: int = 0
    data: DataPosition = field(default_factory=DataPosition)
    synced_step: int = 0  # remote scoring: the step whose policy the server last loaded (0: the initial one)


def save_checkpoint(
    output_dir: Path,
    state: TrainState,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config_yaml: str,
    keep: int,
    process_rng: list[dict[str, Any]] | None = None,
) -> Path:
    """`process_rng`: every process's `rng_states()`, in process order (default: this process's only)."""
    root = output_dir / CHECKPOINTS
    final = root / f"step-{state.step}"
    partial = root / f".step-{state.step}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial / "model")
    tokenizer.save_pretrained(partial / "model")
    torch.save(
        {
            "train_state": asdict(state),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": process_rng or [rng_states()],
        },
        partial / "state.pt",
    )
    (partial / "config.yaml").write_text(config_yaml)
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = output_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if (p / "state.pt").is_file() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def load_state(
    checkpoint: Path, optimizer: torch.optim.Optimizer, scheduler: Any, rank: int = 0, processes: int = 1
) -> TrainState:
    """Restore optimizer, scheduler and process `rank`'s RNG states from `checkpoint` (the weights
    load with the model). Every process's optimizer state is the same, so the main process's serves all."""
    saved = torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    rng = saved["rng"] if isinstance(saved["rng"], list) else [saved["rng"]]  # older checkpoints: one dict
    if len(rng) != processes:
        logger.warning(
            "%s was saved by %d process(es), this run has %d: sampling will not repeat the interrupted run's",
            checkpoint,
            len(rng),
            processes,
        )
    _set_rng_states(rng[rank % len(rng)])
    raw = saved["train_state"]
    return TrainState(step=raw["step"], data=DataPosition(**raw["data"]), synced_step=raw["synced_step"])


def rng_states() -> dict[str, Any]:
    """This process's random number generators' states."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
