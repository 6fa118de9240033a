"""In-process scoring: the policy model scores its own completions (no second copy, no server).

The one adapter module that needs `ccapo` itself (and so transformers>=5.24): the TRL adapter and
ccapo's own trainer use it; verl and OpenRLHF score through a server or a Ray handle instead.
"""

from __future__ import annotations

from typing import Any

from ccapo import Scorer
from ccapo.config import ScoringConfig
from ccapo_adapters.config import CounterfactualConfig
from ccapo_adapters.provider import WeightProvider


def in_process_provider(model: Any, tokenizer: Any, config: CounterfactualConfig) -> WeightProvider:
    """`model` must be the unwrapped module that trains; the scoring config is validated here."""
    ScoringConfig.model_validate(config.scoring_config())  # fail at construction, not at the first step
    scorer = None
    if config.scores:
        scorer = Scorer(model, tokenizer, max_batch_tokens=config.max_batch_tokens)
    return WeightProvider(config, scorer)


def create_provider(config: CounterfactualConfig, model: Any = None, tokenizer: Any = None) -> WeightProvider:
    """The provider `config.provider` names; in-process needs the policy model and its tokenizer."""
    if config.provider != "inprocess":
        return WeightProvider.create(config)
    if model is None or tokenizer is None:
        raise ValueError('provider="inprocess" needs the policy model and its tokenizer')
    return in_process_provider(model, tokenizer, config)
