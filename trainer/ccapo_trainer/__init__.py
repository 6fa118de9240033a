"""The bundled GRPO/DAPO trainer with counterfactual token weights: `ccapo train --config configs/X.yaml`.

The public names load on first use, so `ccapo --help` does not import datasets and math-verify.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "TrainConfig": "ccapo_trainer.config",
    "load_config": "ccapo_trainer.config",
    "Trainer": "ccapo_trainer.loop",
    "TrainResult": "ccapo_trainer.loop",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ccapo_trainer' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
