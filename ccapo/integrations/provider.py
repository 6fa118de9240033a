"""Where an RL adapter's token weights come from: the policy scoring itself, or a scoring server.

Every adapter (TRL, verl, OpenRLHF) holds one `WeightProvider` and calls `weights()` once per
generated batch with the framework's own token ids; the provider keeps the books the adapters log
(time spent scoring, and for a server, how many optimizer steps its model lags behind the policy).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ccapo.batch_weights import WEIGHTINGS, BatchWeights, IdRows, TraceScorer, Weighting, score_token_batch
from ccapo.config import ScoringConfig
from ccapo.interventions import Intervention
from ccapo.spans import SegmenterName
from ccapo.weights import Scheme

logger = logging.getLogger(__name__)

Provider = Literal["inprocess", "remote"]


@dataclass
class CounterfactualConfig:
    """How an RL trainer gets counterfactual token weights (the same fields in every adapter).

    `weighting` is the arm ("uniform" scores nothing); `scheme`, `segmenter` and `intervention` pick
    the `ScoringConfig`, and `scoring` sets any other of its fields (e.g. {"max_spans": 8}).
    `provider` "inprocess" scores with the policy model itself (no second copy); "remote" sends
    token ids to the scoring server(s) at `server_url`. With a server, `sync_every` > 0 pushes the
    policy there every that many optimizer steps: the trainer saves it to `sync_dir`, a path the
    server can read, and asks the server to load it (which needs the server's admin key).
    """

    weighting: Weighting = "counterfactual"
    scheme: Scheme = "paper"
    segmenter: SegmenterName = "calc"
    intervention: Intervention = "delete"
    provider: Provider = "inprocess"
    server_url: str | Sequence[str] | None = None
    api_key: str | None = None
    admin_key: str | None = None
    sync_every: int = 0
    sync_dir: str | None = None
    max_batch_tokens: int | None = None  # in-process: tokens per forward pass of the scorer
    scoring: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting {self.weighting!r} is not one of {', '.join(WEIGHTINGS)}")
        if self.provider not in ("inprocess", "remote"):
            raise ValueError(f"provider {self.provider!r} is not 'inprocess' or 'remote'")
        if self.provider == "remote" and not self.server_url:
            raise ValueError('provider="remote" needs server_url (the scoring server, e.g. "http://host:8000")')
        if self.sync_every < 0:
            raise ValueError(f"sync_every must be >= 0 (0: never push the policy to the server), got {self.sync_every}")
        if self.sync_every and (self.provider != "remote" or not self.sync_dir):
            raise ValueError("sync_every needs provider='remote' and a sync_dir the scoring server can read")
        self.scoring_config()  # fail at configuration time, not at the first training step

    def scoring_config(self) -> ScoringConfig:
        scoring = dict(self.scoring)
        weights = dict(scoring.pop("weights", {}))
        weights.setdefault("scheme", self.scheme)
        return ScoringConfig.model_validate(
            {"segmenter": self.segmenter, "intervention": self.intervention, **scoring, "weights": weights}
        )


class WeightProvider:
    """Token weights for batches of token ids, from `scorer`, with the statistics adapters log.

    Build it with `in_process(model, tokenizer, config)` or `remote(config)`, or pass any object
    with `Scorer.score()`'s contract.
    """

    def __init__(self, config: CounterfactualConfig, scorer: TraceScorer | None):
        self.config = config
        self.scorer = scorer
        self.scoring = config.scoring_config()
        self.synced_step = 0  # a server is assumed to start with the initial policy
        self.last_seconds = 0.0

    @classmethod
    def in_process(
        cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: CounterfactualConfig
    ) -> WeightProvider:
        """The policy scores its own completions: `model` must be the unwrapped module that trains."""
        from ccapo.scorer import Scorer

        scorer = None
        if config.weighting != "uniform":
            scorer = Scorer(model, tokenizer, max_batch_tokens=config.max_batch_tokens)
        return cls(config, scorer)

    @classmethod
    def remote(cls, config: CounterfactualConfig) -> WeightProvider:
        try:
            from ccapo_client import RemoteScorer
        except ImportError as err:
            raise ImportError(
                'provider="remote" needs the ccapo-client package: pip install ./clients/python (or ccapo-client)'
            ) from err
        scorer = RemoteScorer(config.server_url, api_key=config.api_key, admin_key=config.admin_key)
        return cls(config, scorer)

    @classmethod
    def create(
        cls,
        config: CounterfactualConfig,
        model: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> WeightProvider:
        """The provider `config.provider` names; in-process needs the policy model and its tokenizer."""
        if config.provider == "remote":
            return cls.remote(config)
        if model is None or tokenizer is None:
            raise ValueError('provider="inprocess" needs the policy model and its tokenizer')
        return cls.in_process(model, tokenizer, config)

    def weights(
        self,
        prompt_ids: IdRows,
        completion_ids: IdRows,
        *,
        prompt_mask: torch.Tensor | None = None,
        completion_mask: torch.Tensor | None = None,
        reference_answers: Sequence[str] | None = None,
    ) -> BatchWeights:
        """`score_token_batch` with this provider's scorer and configuration; times the call.

        `reference_answers` (one per row) are needed when the scoring config's target is "reference".
        """
        started = time.perf_counter()
        batch = score_token_batch(
            self.scorer,
            prompt_ids,
            completion_ids,
            prompt_mask=prompt_mask,
            completion_mask=completion_mask,
            weighting=self.config.weighting,
            config=self.scoring,
            reference_answers=reference_answers if self.scoring.target == "reference" else None,
        )
        self.last_seconds = time.perf_counter() - started
        return batch

    def metrics(
        self, batch: BatchWeights, mask: torch.Tensor | None = None, step: int | None = None
    ) -> dict[str, float]:
        """Weight statistics, scoring time and (for a server) the policy lag, keyed "ccapo/...".

        `policy_lag_steps` counts optimizer steps since the server last loaded the policy: with
        `sync_every` 0 the server keeps its starting model and the lag grows with training.
        """
        metrics = {f"ccapo/{key}": value for key, value in batch.metrics(mask).items()}
        metrics["ccapo/score_seconds"] = self.last_seconds
        if self.config.provider == "remote" and step is not None:
            metrics["ccapo/policy_lag_steps"] = float(step - self.synced_step)
        return metrics

    def maybe_sync(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, step: int) -> bool:
        """Push the policy to the server if `sync_every` steps have passed since the last push."""
        if not self.config.sync_every or step - self.synced_step < self.config.sync_every:
            return False
        self.sync(model, tokenizer, step)
        return True

    def sync(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, step: int) -> None:
        """Save the policy (LoRA merged) to `sync_dir` and have the server load it."""
        if self.config.provider != "remote" or not self.config.sync_dir:
            raise ValueError("sync needs provider='remote' and a sync_dir")
        path = Path(self.config.sync_dir)
        path.mkdir(parents=True, exist_ok=True)
        save_merged(model, tokenizer, path)
        info = self.scorer.load_model(str(path))
        self.synced_step = step
        logger.info("scoring server now runs the policy of step %d (version %s)", step, info.version)


def save_merged(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path) -> None:
    """A plain checkpoint a scoring server can load: a PEFT model is saved with its adapters merged.

    Merging works on a copy (the training model keeps its adapters), so it briefly needs the memory
    of a second model.
    """
    if hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
