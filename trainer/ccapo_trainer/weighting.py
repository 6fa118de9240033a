"""The trainer's token weights: the RL adapters' `WeightProvider`, configured from a `TrainConfig`.

In-process, the policy object itself scores (no second copy; the engine switches it to eval mode
under `torch.inference_mode` and back). Remotely, the scoring server scores, and every `sync_every`
steps the trainer saves its policy where the server can read it and has the server load it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from ccapo_adapters import BatchWeights, CounterfactualConfig, WeightProvider
from ccapo_adapters.inprocess import create_provider
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ccapo import Scorer
from ccapo_trainer.config import TrainConfig


def weight_provider(
    config: TrainConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, output_dir: Path
) -> WeightProvider:
    remote = config.provider == "remote" and config.weighting != "uniform"  # uniform scores nothing anywhere
    scoring = config.scoring
    settings = CounterfactualConfig(
        weighting=config.weighting,
        scheme=scoring.weights.scheme,
        segmenter=scoring.segmenter,
        intervention=scoring.intervention,
        provider="remote" if remote else "inprocess",
        server_url=[u.strip() for u in config.server_url.split(",")] if remote and config.server_url else None,
        api_key=config.server_api_key,
        admin_key=config.server_admin_key,
        sync_every=config.sync_every if remote else 0,
        sync_dir=config.sync_dir or str(output_dir / "sync"),
        scoring=scoring.model_dump(),
    )
    return create_provider(settings, model, tokenizer)


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
    weight mass sits, so `weights/calc_mass` compares across arms."""
    traces = [
        {"prompt_ids": list(p), "completion_ids": row[m.bool()].tolist(), "reference_answer": answer}
        for p, row, m, answer in zip(prompts, ids, mask, answers, strict=True)
    ]
    try:
        prepared = scorer.prepare(traces, config.scoring)
    except ValueError:  # a trace the scorer rejects: the metric is missing for this step, nothing else
        return
    for row, item in enumerate(prepared):
        batch.results[row] = _Segmented(item.spans)


class _Segmented:
    """Just enough of a result for `BatchWeights.metrics` to find the calculation spans."""

    status = "segmented"

    def __init__(self, spans):
        self.spans = spans
