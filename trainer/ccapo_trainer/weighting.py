"""Where the trainer's token weights come from: the policy scoring itself, or a scoring server.

In-process, the policy object itself scores (no second copy; the engine switches it to eval mode
under `torch.inference_mode` and back). Remotely, `ccapo_client.RemoteScorer` scores, and every
`sync_every` steps the trainer saves its policy where the server can read it and has the server
load it; each step logs how many steps behind the policy the server's model is.
"""

from __future__ import annotations

import copy
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ccapo import Scorer
from ccapo.batch_weights import BatchWeights, score_token_batch
from ccapo_trainer.config import TrainConfig

logger = logging.getLogger(__name__)


class WeightProvider:
    """Scores a batch of completions into (N, T) weights; `sync` keeps a remote scorer's policy current."""

    def __init__(self, config: TrainConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase):
        self.config = config
        self.tokenizer = tokenizer
        self.remote = None
        self.synced_step: int | None = None  # the step whose policy the server runs (remote)
        self._versions: dict[str, int] = {}
        # In-process scoring needs the policy; the uniform arm still segments (no model work) for metrics.
        self.scorer = Scorer(model, tokenizer, model_id=config.model)
        if config.provider == "remote" and config.weighting != "uniform":
            from ccapo_client import RemoteScorer  # the client is only needed for remote scoring

            urls = [u.strip() for u in (config.server_url or "").split(",") if u.strip()]
            self.remote = RemoteScorer(urls, config.server_api_key, admin_key=config.server_admin_key)

    def weights(
        self, prompts: Sequence[Sequence[int]], ids: torch.Tensor, mask: torch.Tensor, answers: Sequence[str]
    ) -> BatchWeights:
        """(N, T) weights for the completions `ids`; `answers` are the problems' reference answers."""
        batch = score_token_batch(
            self.remote or self.scorer,
            prompts,
            ids,
            completion_mask=mask,
            weighting=self.config.weighting,
            config=self.config.scoring,
            reference_answers=answers if self.config.scoring.target == "reference" else None,
        )
        if self.config.weighting == "uniform":
            self._attach_spans(batch, prompts, ids, mask, answers)
        return batch

    def metrics(self, step: int) -> dict[str, float]:
        if self.remote is None:
            return {}
        version = self.remote.last_model_version
        scored_by = self._versions.get(version) if version is not None else None
        # The server runs the policy from before step `scored_by + 1`; this step's rollouts came from step - 1's.
        return {} if scored_by is None else {"weighting/version_lag": float(step - 1 - scored_by)}

    def sync(self, step: int, model: PreTrainedModel, output_dir: Path) -> None:
        """After optimizer step `step`: save the policy and have the server load it, every `sync_every` steps."""
        if self.remote is None or not self.config.sync_every or step % self.config.sync_every:
            return
        target = Path(self.config.sync_dir or output_dir / "sync") / f"step-{step}"
        save_merged(model, self.tokenizer, target)
        info = self.remote.load_model(str(target.resolve()))
        self._versions[str(info.version)] = step
        previous, self.synced_step = self.synced_step, step
        if previous is not None:  # the server has moved on: the previous sync's files are no longer read
            shutil.rmtree(target.parent / f"step-{previous}", ignore_errors=True)
        logger.info("scoring server now runs the policy after step %d (version %s)", step, info.version)

    def initial_version(self) -> None:
        """Remember the server's model at the start as the policy of step 0 (the run's initial model)."""
        if self.remote is not None:
            self._versions[str(self.remote.model_info().version)] = 0

    def close(self) -> None:
        if self.remote is not None:
            self.remote.close()

    def _attach_spans(self, batch: BatchWeights, prompts, ids: torch.Tensor, mask: torch.Tensor, answers) -> None:
        """Uniform weighting scores nothing; segmenting alone (no forward pass) still shows where the mass sits."""
        traces = [
            {"prompt_ids": list(p), "completion_ids": row[m.bool()].tolist(), "reference_answer": answer}
            for p, row, m, answer in zip(prompts, ids, mask, answers, strict=True)
        ]
        try:
            prepared = self.scorer.prepare(traces, self.config.scoring)
        except ValueError:
            return
        for row, item in enumerate(prepared):
            batch.results[row] = _SpansOnly(item.spans)


class _SpansOnly:
    """Just enough of a result for `BatchWeights.metrics` to find the calculation spans."""

    status = "segmented"

    def __init__(self, spans):
        self.spans = spans


def save_merged(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, target: Path) -> None:
    """A plain HF checkpoint of the policy (LoRA merged into a copy), loadable by any ccapo scorer."""
    target.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "merge_and_unload"):  # a peft model: the server loads plain weights
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
