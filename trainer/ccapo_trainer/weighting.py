"""The trainer's token weights: the RL adapters' `WeightProvider`, built from the config's `counterfactual` section.

In-process, the policy object itself scores (no second copy; the engine switches it to eval mode
under `torch.inference_mode` and back). Remotely, the scoring server scores, and every `sync_every`
steps the trainer saves its policy to `sync_dir` (OUTPUT_DIR/sync unless set) and has the server load it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ccapo_adapters import BatchWeights, WeightProvider
from ccapo_adapters.inprocess import create_provider
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ccapo import Scorer
from ccapo_trainer.config import TrainConfig


def weight_provider(config: TrainConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> WeightProvider:
    return create_provider(config.counterfactual, model, tokenizer)


def segment_only(
    scorer: Scorer,
    batch: BatchWeights,
    prompts: Sequence[Sequence[int]],
    ids: torch.Tensor,
    mask: torch.Tensor,
    answers: Sequence[str],
    config: TrainConfig,
) -> None:
    """Uniform weighting scores nothing; segmenting alone (no forward pass) still shows where the
    weight mass sits, so `ccapo/weights/calc_mass` compares across arms."""
    traces = [
        {"prompt_ids": list(p), "completion_ids": row[m.bool()].tolist(), "reference_answer": answer}
        for p, row, m, answer in zip(prompts, ids, mask, answers, strict=True)
    ]
    try:
        prepared = scorer.prepare(traces, config.counterfactual.scoring_config())
    except ValueError:  # a trace the scorer rejects: the metric is missing for this step, nothing else
        return
    for row, item in enumerate(prepared):
        batch.results[row] = _Segmented(item.spans)


class _Segmented:
    """Just enough of a result for `BatchWeights.metrics` to find the calculation spans."""

    status = "segmented"

    def __init__(self, spans):
        self.spans = spans
