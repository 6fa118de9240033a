"""Where an RL adapter's token weights come from: a scoring server, a Ray Serve deployment, or the policy itself.

Every adapter (TRL, verl, OpenRLHF) holds one `WeightProvider` and calls `weights()` once per
generated batch with the framework's own token ids; the provider keeps the books the adapters log
(time spent scoring, and for a server, how many optimizer steps its model lags behind the policy).
This module needs torch and `ccapo-client` only (it runs beside verl's and OpenRLHF's transformers);
in-process scoring by the policy, which needs `ccapo`, is built by `ccapo_adapters.inprocess`.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ccapo_adapters.batch import BatchWeights, IdRows, TraceScorer, score_token_batch
from ccapo_adapters.config import PROVIDERS, CounterfactualConfig, Provider
from ccapo_adapters.names import POLICY_LAG, SCORE_SECONDS, namespaced, policy_lag

__all__ = ["PROVIDERS", "CounterfactualConfig", "Provider", "WeightProvider", "provider_from_settings", "save_merged"]

logger = logging.getLogger(__name__)
# An unscorable trace (no answer marker): the server validates the request and its config, runs no forward pass.
_PROBE = {"prompt": "ccapo configuration check", "completion": "no answer here"}


class WeightProvider:
    """Token weights for batches of token ids, from `scorer`, with the statistics adapters log.

    Build it with `remote(config)` (HTTP), `from_handle(config, handle)` (Ray Serve), or
    `ccapo_adapters.inprocess.in_process_provider(model, tokenizer, config)`; or pass any object
    with `ccapo.Scorer.score()`'s contract.
    """

    def __init__(self, config: CounterfactualConfig, scorer: TraceScorer | None):
        self.config = config
        self.scorer = scorer
        self.scoring = config.scoring_config()
        # The step whose policy the scorer holds. Without sync the scorer is taken to start with the initial
        # policy; with sync it holds an unknown one (None) until the step-0 push.
        self.synced_step: int | None = None if config.sync_every else 0
        self.last_seconds = 0.0
        self.outage: str | None = None  # the scorer's error while it fails, None while it answers
        self.refusal_logged = False  # whether a row the scorer refused was logged (once per run)
        self.pending_swap: tuple[Any, int] | None = None  # a push still loading on the scorer, and its step
        self.live_model: str | None = None  # what the scorer serves, as it names it (a push: its path)

    @classmethod
    def remote(cls, config: CounterfactualConfig) -> WeightProvider:
        """Score on the server(s) at `config.server_url`; checks them and the scoring config now."""
        from ccapo_client import RemoteScorer

        scorer = RemoteScorer(
            config.server_url, api_key=config.api_key, admin_key=config.admin_key, timeout=config.request_timeout_s
        )
        return cls(config, scorer).checked()

    @classmethod
    def from_handle(cls, config: CounterfactualConfig, handle: Any) -> WeightProvider:
        """Score through a Ray Serve deployment handle (a driver on the same Ray cluster, no HTTP)."""
        try:
            from ccapo_client import RayScorer
        except ImportError as err:
            raise ImportError(
                "scoring through a Ray Serve handle needs ccapo-client with Ray support: "
                "pip install './clients/python[ray]'"
            ) from err
        scorer = RayScorer(handle, api_key=config.api_key, admin_key=config.admin_key, timeout=config.request_timeout_s)
        return cls(config, scorer).checked()

    @classmethod
    def create(cls, config: CounterfactualConfig, handle: Any = None) -> WeightProvider:
        """The provider `config.provider` names: "remote" or "ray" (with `handle`); "uniform" needs none.

        In-process scoring needs the policy and `ccapo`: `ccapo_adapters.inprocess.create_provider`.
        """
        if not config.scores:
            return cls(config, None)
        if config.provider == "remote":
            return cls.remote(config)
        if config.provider == "ray":
            if handle is None:
                raise ValueError('provider="ray" needs the Ray Serve deployment handle (serve.get_deployment_handle)')
            return cls.from_handle(config, handle)
        raise ValueError(
            'provider="inprocess" scores with the policy itself: build it with '
            "ccapo_adapters.inprocess.create_provider(config, model, tokenizer) (needs ccapo)"
        )

    def checked(self) -> WeightProvider:
        """Fail now, not at the first training step: the scorer answers and accepts the scoring config,
        and with `sync_every`, the admin key and `sync_dir`.

        Scores one trace without an answer marker, which the scorer validates but runs no model on.
        """
        if self.scorer is None or not self.config.scores:
            return self
        if self.config.sync_every is None:
            logger.warning(
                "the scorer keeps the model it runs, which is not the policy being trained: set sync_dir (a path "
                "the scorer reads) and admin_key so it follows the policy, or sync_every: 0 to keep it on purpose"
            )
        info = self.scorer.model_info()
        self.live_model = info.id
        if self.config.model_id is not None and info.id != self.config.model_id:
            raise ValueError(
                f"the scorer runs model {info.id!r}, not the expected {self.config.model_id!r}: start the server "
                "with that model (ccapo serve --model ...) or set model_id to the one it runs"
            )
        self.scorer.score([_PROBE], self.scoring)
        if self.config.sync_every:
            self._check_sync_access()
        return self

    def _check_sync_access(self) -> None:
        """Ask the scorer to load a path in `sync_dir` that never exists: "no such model" means the admin key
        and the directory are accepted; an auth or model-roots refusal is what the first sync would meet."""
        from ccapo_client import ForbiddenError, InvalidRequestError, UnauthorizedError

        probe = str(Path(self._sync_dir()) / ".ccapo-sync-check")
        try:
            self.scorer.load_model(probe)
        except InvalidRequestError:
            return
        except (UnauthorizedError, ForbiddenError) as err:
            raise ValueError(
                f"policy sync would be refused: {err}. Check admin_key (the server's CCAPO_ADMIN_KEY) and that "
                f"sync_dir {self.config.sync_dir!r} is a path the server reads inside its CCAPO_MODEL_ROOTS"
            ) from err

    def weights(
        self,
        prompt_ids: IdRows,
        completion_ids: IdRows,
        *,
        prompt_mask: torch.Tensor | None = None,
        completion_mask: torch.Tensor | None = None,
        reference_answers: Sequence[str] | None = None,
        skip: Sequence[bool] | torch.Tensor | None = None,
    ) -> BatchWeights:
        """`score_token_batch` with this provider's scorer and configuration; times the call.

        `reference_answers` (one per row) are needed when the scoring config's target is "reference".
        Rows where `skip` is true are not scored (uniform weights), e.g. rows with a zero advantage.
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
            reference_answers=reference_answers if self.scoring.get("target") == "reference" else None,
            skip=skip,
        )
        self.last_seconds = time.perf_counter() - started
        self._note_outage(batch)
        return batch

    def _note_outage(self, batch: BatchWeights) -> None:
        """One warning when the scorer starts failing and one when it answers again, not one per step; one
        warning, for the whole run, the first time the scorer refuses a row."""
        if batch.refused and not self.refusal_logged:
            row = batch.refused[0]
            logger.warning(
                "the scorer refused a completion, which keeps uniform weights (%s); ccapo/weights/refused counts "
                "such rows per step, and this is logged once",
                batch.errors[row],
            )
            self.refusal_logged = True
        if batch.scorer_error:
            if self.outage is None:
                logger.warning(
                    "the scorer failed (%s): training goes on with uniform weights until it answers again "
                    "(ccapo/weights/failed counts the rows)",
                    batch.scorer_error,
                )
            self.outage = batch.scorer_error
        elif self.outage is not None and any(result is not None for result in batch.results):
            logger.warning("the scorer answers again: counterfactual weights are back")
            self.outage = None

    def metrics(
        self, batch: BatchWeights, mask: torch.Tensor | None = None, step: int | None = None
    ) -> dict[str, float]:
        """Weight statistics, scoring time and (for a server) the policy lag, keyed "ccapo/..." (`names`).

        `step` is the optimizer updates the policy that generated the batch had; the lag counts those
        since the scorer last loaded the policy: with `sync_every` 0 the scorer keeps its starting
        model and the lag grows with training.
        """
        metrics = namespaced(batch.metrics(mask))
        metrics[SCORE_SECONDS] = self.last_seconds
        if self.config.provider != "inprocess" and self.config.scores and step is not None:
            metrics[POLICY_LAG] = policy_lag(step, self.synced_step)
        return metrics

    def sync_due(self, step: int) -> bool:
        """Whether the scorer has not loaded this run's policy yet, or `sync_every` steps have passed since.

        Never while an earlier push is still loading (see `load_policy`): the trainer must not write
        over the checkpoint the scorer reads, and the scorer takes one swap at a time.
        """
        if not self.config.sync_every or self.swap_pending():
            return False
        return self.synced_step is None or step - self.synced_step >= self.config.sync_every

    def maybe_sync(self, model: Any, tokenizer: Any, step: int) -> bool:
        """Push the policy to the scorer if it is due (see `sync_due`); whether the scorer now holds it."""
        return self.sync_due(step) and self.sync(model, tokenizer, step)

    def sync(self, model: Any, tokenizer: Any, step: int) -> bool:
        """Save the policy (a transformers model, LoRA merged) to `sync_dir` and have the scorer load it.

        Returns whether the scorer now holds it; a failure is logged, not raised (see `load_policy`).
        While an earlier push is still loading nothing is saved (the scorer reads those files).
        """
        if self.swap_pending():
            return False
        path = Path(self._sync_dir())
        try:
            path.mkdir(parents=True, exist_ok=True)
            save_merged(model, tokenizer, path)
        except OSError as err:
            return self._sync_failed(step, err)
        return self.load_policy(str(path), step)

    def load_policy(self, path: str, step: int) -> bool:
        """Have the scorer load the policy checkpoint at `path` (a path on the scorer's side), saved at `step`.

        For trainers that save the checkpoint themselves (verl's `hf_model`); resets the policy lag once
        the scorer serves it. Waits at most `swap_wait_s`: a slower load is pending (False; the scorer keeps
        scoring with its live model, the lag grows, and `sync_due` looks at the swap again, taking its step
        once it is live). A refusal, a failed load or an unreachable scorer never stops training either: a
        warning, False, and `sync_due` stays true, so the next step tries again.
        """
        from ccapo_client import ApiError

        if self.config.provider == "inprocess":
            raise ValueError("the in-process scorer is the policy itself: there is nothing to sync")
        if self.swap_pending():
            return False
        try:
            swap = self.scorer.swap_model(path, self.config.swap_wait_s)
        except (ApiError, ConnectionError, OSError) as err:  # OSError: a TimeoutError too
            return self._sync_failed(step, err)
        return self._settle(swap, step)

    def swap_pending(self) -> bool:
        """Whether a policy push is still loading on the scorer; looks again (without waiting) first."""
        from ccapo_client import ApiError

        if self.pending_swap is None:
            return False
        swap, step = self.pending_swap
        try:
            swap = self.scorer.swap_status(swap)
        except (ApiError, ConnectionError, OSError) as err:
            self.pending_swap = None
            self._sync_failed(step, err)
            return False
        self._settle(swap, step)
        return self.pending_swap is not None

    def policies_in_use(self) -> list[str]:
        """The checkpoints the scorer may still read: the one it serves and a push still loading.

        A trainer that writes each push to a new folder deletes the others (`verl_sync.remove_older_policies`)
        however its swaps ended: live within `swap_wait_s` or later, failed, or superseded.
        """
        pending = [self.pending_swap[0].path] if self.pending_swap is not None else []
        return [*([self.live_model] if self.live_model else []), *pending]

    def _settle(self, swap: Any, step: int) -> bool:
        """Book a swap's outcome: live (the scorer holds step `step`'s policy), failed, or still pending."""
        if swap.status == "pending":
            if self.pending_swap is None:
                logger.warning(
                    "the scorer is still loading the policy of step %d after %gs: training goes on, scored by "
                    "its older model (ccapo/policy_lag_steps grows) until the new one is live",
                    step,
                    self.config.swap_wait_s,
                )
            self.pending_swap = (swap, step)
            return False
        self.pending_swap = None
        if swap.status == "failed":
            return self._sync_failed(step, RuntimeError(swap.error))
        self.synced_step = step
        self.live_model = swap.path
        logger.info("the scorer now runs the policy of step %d (version %s)", step, swap.model.version)
        return True

    def _sync_failed(self, step: int, err: Exception) -> bool:
        logger.warning(
            "policy sync at step %d failed (%s): training goes on, scored by the scorer's older model "
            "(ccapo/policy_lag_steps grows); the next step tries again",
            step,
            err,
        )
        return False

    def _sync_dir(self) -> str:
        if self.config.provider == "inprocess" or not self.config.sync_dir:
            raise ValueError("sync needs provider='remote' or 'ray' and a sync_dir")
        return self.config.sync_dir


def provider_from_settings(settings: Mapping[str, Any]) -> WeightProvider:
    """A remote or Ray provider from plain settings (a trainer config's section, a JSON env var).

    `CounterfactualConfig`'s fields; `provider: ray` scores through the handle of the Ray Serve
    application `ray_app`, looked up on the Ray cluster this process joined.
    """
    config = CounterfactualConfig.model_validate(settings)
    if config.provider != "ray" or not config.scores:
        return WeightProvider.create(config)
    from ray import serve

    return WeightProvider.from_handle(config, serve.get_app_handle(config.ray_app))


def save_merged(model: Any, tokenizer: Any, path: Path) -> None:
    """A plain checkpoint a scoring server can load: a PEFT model is saved with its adapters merged.

    Merging works on a copy (the training model keeps its adapters), so it briefly needs the memory
    of a second model.
    """
    if hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
