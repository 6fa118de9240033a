"""TRL: `CounterfactualGRPOTrainer`, TRL's `GRPOTrainer` with counterfactual token weights.

After each generation batch is scored for rewards, the policy (or a scoring server) scores the
completions' token ids and the sequence advantages (B,) become per-token advantages (B, T) =
advantage x weight. TRL's own `_compute_loss` takes (B, T) advantages as they are, so every loss
type, its clipping, normalization and gradient accumulation stay TRL's: each supported loss is
positively homogeneous in the advantage, so weighting the advantage of a token by w >= 0 is
weighting that token's policy-gradient loss by w. The KL term (beta > 0) is not weighted.
"""

from __future__ import annotations

from typing import Any

import torch
from packaging.version import Version

from ccapo_adapters.batch import apply_token_weights
from ccapo_adapters.config import CounterfactualConfig
from ccapo_adapters.inprocess import create_provider
from ccapo_adapters.provider import WeightProvider

TRL_MIN, TRL_MAX = Version("1.0.0"), Version("2.0.0")
# The loss types of TRL 1.x; each is linear in the advantage for a fixed sign, so (B, T) advantages
# weight the per-token loss. A loss type added later may not be: it fails at construction instead.
SUPPORTED_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "luspo", "cispo", "sapo", "vespo")


def check_trl_version(version: str) -> None:
    """TRL 1.x passes (B, T) advantages through `_compute_loss` and returns the batch keys read here."""
    if not TRL_MIN <= Version(version) < TRL_MAX:
        raise ImportError(
            f"ccapo's TRL adapter supports trl>={TRL_MIN},<{TRL_MAX}; found trl {version}. "
            f'Install a supported version: pip install "trl>={TRL_MIN},<{TRL_MAX}"'
        )


try:
    import trl
except ImportError as err:
    raise ImportError('ccapo_adapters.trl needs TRL: pip install ".[trl]" in a ccapo clone, or "trl>=1.0,<2"') from err
check_trl_version(trl.__version__)

from trl import GRPOTrainer  # noqa: E402  (after the version check, so an old TRL fails with its message)


class CounterfactualGRPOTrainer(GRPOTrainer):
    """`GRPOTrainer` whose per-token loss is weighted by counterfactual span importance.

    Takes GRPOTrainer's arguments plus `counterfactual` (a `CounterfactualConfig`; default: the
    counterfactual arm with the "normalized" scheme, mean weight 1, scored in-process by the policy;
    `CounterfactualConfig(scheme="paper")` gives the paper's weights) or a ready `weight_provider`. Weights are
    computed once per generation batch in training (evaluation losses stay unweighted) and logged
    through TRL's metrics as "ccapo/weights/mean", "ccapo/score_seconds", ...
    """

    def __init__(
        self,
        *args: Any,
        counterfactual: CounterfactualConfig | None = None,
        weight_provider: WeightProvider | None = None,
        **kwargs: Any,
    ):
        settings = weight_provider.config if weight_provider else counterfactual or CounterfactualConfig()
        if settings.scores and settings.scoring_config().get("target") == "reference":
            raise ValueError(
                'scoring target "reference" needs a reference answer per completion, which GRPOTrainer does not '
                'pass to the adapter: use the default target "completion"'
            )
        super().__init__(*args, **kwargs)
        if self.loss_type not in SUPPORTED_LOSS_TYPES:
            raise ValueError(
                f"loss_type {self.loss_type!r} is not one CounterfactualGRPOTrainer supports "
                f"({', '.join(SUPPORTED_LOSS_TYPES)})"
            )
        self.counterfactual = settings
        self.weight_provider = weight_provider or self._build_provider(self.counterfactual)

    def _build_provider(self, config: CounterfactualConfig) -> WeightProvider:
        if config.provider == "inprocess" and config.scores and self._zero3():
            raise ValueError(
                "in-process scoring needs whole parameters, and DeepSpeed ZeRO-3 shards them: "
                'use provider="remote" with a scoring server'
            )
        return create_provider(config, self._policy(), self._tokenizer_for_scoring())

    def _zero3(self) -> bool:
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        return plugin is not None and plugin.zero_stage == 3

    def _policy(self) -> torch.nn.Module:
        # The module that trains (PEFT adapters included), without DDP/DeepSpeed wrappers.
        return self.accelerator.unwrap_model(self.model)

    def _tokenizer_for_scoring(self) -> Any:
        return getattr(self.processing_class, "tokenizer", self.processing_class)

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        if self.model.training:
            self._weight_advantages(output)
        return output

    def _weight_advantages(self, output: dict[str, Any]) -> None:
        """Turn `output["advantages"]` (B,) into (B, T) weighted advantages, and log the weights."""
        step = self.state.global_step
        self.weight_provider.maybe_sync(self._policy(), self._tokenizer_for_scoring(), step)
        # Score every completion token the model saw (tool outputs too); weight only the loss tokens.
        # The weights multiply the advantages, so a row whose advantage is 0 needs none.
        batch = self.weight_provider.weights(
            output["prompt_ids"],
            output["completion_ids"],
            prompt_mask=output["prompt_mask"],
            completion_mask=output["completion_mask"],
            skip=(output["advantages"] == 0).cpu(),
        )
        if (batch.weights < 0).any():
            raise ValueError(
                "negative token weights would flip the clipped loss of those tokens; "
                "keep WeightConfig.min_weight and normalized_bounds at or above 0"
            )
        loss_mask = output["completion_mask"] * output.get("tool_mask", 1)
        output["advantages"] = apply_token_weights(output["advantages"], batch.weights, loss_mask)
        self._log_weight_metrics(self.weight_provider.metrics(batch, loss_mask.cpu(), step))

    def _log_weight_metrics(self, metrics: dict[str, float]) -> None:
        if not metrics:
            return
        # Averaged over processes, like TRL's own per-batch metrics.
        local = torch.tensor(list(metrics.values()), dtype=torch.float32, device=self.accelerator.device)
        averaged = self.accelerator.gather(local).view(-1, len(metrics)).mean(0).tolist()
        for key, value in zip(metrics, averaged, strict=True):
            self._metrics["train"][key].append(value)
