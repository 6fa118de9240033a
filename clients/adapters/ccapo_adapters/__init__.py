"""Counterfactual token weights inside the RL trainers people already run.

`ccapo_adapters.trl`, `.verl` and `.openrlhf` each hold one framework's glue; every adapter is a
thin layer over `ccapo_adapters.batch`: token ids in (never re-tokenized text), a (B, T) weight
tensor aligned to the framework's completion tokens out. `config.CounterfactualConfig` is the one
weighting configuration they and `ccapo train` share. This package, `batch`, `config`, `provider`,
`verl` and `openrlhf` need torch and `ccapo-client` only; `inprocess` and `trl` also need `ccapo`.
The names below load on first use, so that `ccapo_adapters.openrlhf_hook` (a Ray worker's setup
hook) imports nothing but the standard library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ccapo_adapters.batch import BatchWeights, apply_token_weights, score_token_batch
    from ccapo_adapters.config import CounterfactualConfig
    from ccapo_adapters.provider import WeightProvider

_HOMES = {
    "BatchWeights": "batch",
    "apply_token_weights": "batch",
    "score_token_batch": "batch",
    "CounterfactualConfig": "config",
    "WeightProvider": "provider",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'ccapo_adapters' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ccapo_adapters.{_HOMES[name]}"), name)


__all__ = ["BatchWeights", "CounterfactualConfig", "WeightProvider", "apply_token_weights", "score_token_batch"]
