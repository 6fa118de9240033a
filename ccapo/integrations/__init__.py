"""Counterfactual token weights inside the RL trainers people already run.

`ccapo.integrations.trl`, `.verl` and `.openrlhf` each import their framework; this package and
`provider` do not. Every adapter is a thin layer over `ccapo.batch_weights`: token ids in (never
re-tokenized text), a (B, T) weight tensor aligned to the framework's completion tokens out.
"""

from ccapo.integrations.provider import CounterfactualConfig, WeightProvider

__all__ = ["CounterfactualConfig", "WeightProvider"]
