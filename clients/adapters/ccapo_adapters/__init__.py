"""Counterfactual token weights inside the RL trainers people already run.

`ccapo_adapters.trl`, `.verl` and `.openrlhf` each hold one framework's glue; every adapter is a
thin layer over `ccapo_adapters.batch`: token ids in (never re-tokenized text), a (B, T) weight
tensor aligned to the framework's completion tokens out. `config.CounterfactualConfig` is the one
weighting configuration they and `ccapo train` share. This package, `batch`, `config`, `provider`,
`verl` and `openrlhf` need torch and `ccapo-client` only; `inprocess` and `trl` also need `ccapo`.
"""

from ccapo_adapters.batch import BatchWeights, apply_token_weights, score_token_batch
from ccapo_adapters.config import CounterfactualConfig
from ccapo_adapters.provider import WeightProvider

__all__ = ["BatchWeights", "CounterfactualConfig", "WeightProvider", "apply_token_weights", "score_token_batch"]
