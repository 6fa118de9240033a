"""The bundled GRPO/DAPO trainer with counterfactual token weights: `ccapo train --config configs/X.yaml`.

The public names load on first use, so `ccapo --help` does not import datasets and math-verify. Tasks
and rewards are registered by name with `ccapo_trainer.data.register_task` and
`ccapo_trainer.rewards.register_reward` (or the `ccapo_trainer.tasks` / `ccapo_trainer.rewards`
entry-point groups).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the names are, for type checkers and the API reference; nothing loads here
    from ccapo_trainer.config import TrainConfig, load_config
    from ccapo_trainer.loop import Trainer, TrainResult

_EXPORTS = {
    "TrainConfig": "ccapo_trainer.config",
    "load_config": "ccapo_trainer.config",
    "Trainer": "ccapo_trainer.loop",
    "TrainResult": "ccapo_trainer.loop",
}
__all__ = ["TrainConfig", "TrainResult", "Trainer", "load_config"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ccapo_trainer' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
