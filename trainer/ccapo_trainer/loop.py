"""The GRPO/DAPO training loop: build the run once, then step: rollout -> reward -> advantage -> weight -> update.

A step collects `prompts_per_step` groups of `num_generations` samples that carry a learning signal
(dynamic sampling drops groups whose rewards are all equal and draws further prompts), weights
their tokens, and takes one optimizer step per `num_iterations` over them in micro-batches whose
losses add up exactly to the full batch's. The run's objects are in `ccapo_trainer.components`,
each stage in `ccapo_trainer.stages`; this module is the loop that ties them together.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccapo_adapters.names import SCORE_SECONDS, WEIGHT_HISTOGRAM

from ccapo_trainer.checkpoint import latest_checkpoint, list_checkpoints, rng_states, save_checkpoint
from ccapo_trainer.components import Components, build_components
from ccapo_trainer.config import TrainConfig
from ccapo_trainer.data import Problem, load_problems
from ccapo_trainer.distributed import param_checksum, slowest, update_metrics
from ccapo_trainer.errors import TrainingError
from ccapo_trainer.rewards import RewardFn, WeightedRewards, reward_fn
from ccapo_trainer.stages.batch import assemble
from ccapo_trainer.stages.collect import collect
from ccapo_trainer.stages.evaluate import evaluate
from ccapo_trainer.stages.update import update
from ccapo_trainer.stages.weighting import sync_policy, token_weights, weighting_metrics
from ccapo_trainer.stopping import StopSignals

__all__ = ["StepCallback", "TrainResult", "Trainer", "TrainingError", "train_step"]

logger = logging.getLogger(__name__)

StepCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path
    step: int
    interrupted: bool  # stopped by SIGTERM/Ctrl-C after saving a checkpoint


class Trainer:
    """Trains `config.model` with GRPO-family RL and counterfactual token weights.

    `train_problems` / `eval_problems` replace the config's dataset; `reward_fns` adds reward
    functions by name (the config's `rewards` picks among them and the built-in ones). `resume`:
    True continues from the newest checkpoint in `output_dir`, a path from that checkpoint.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        train_problems: Sequence[Problem] | None = None,
        eval_problems: Sequence[Problem] | None = None,
        reward_fns: Mapping[str, RewardFn] | None = None,
        resume: bool | str | Path = False,
        on_step: StepCallback | None = None,
    ):
        self.config = config
        self.output_dir = Path(config.output_dir)
        self.on_step = on_step
        self.checkpoint = checkpoint_to_resume(self.output_dir, resume)
        self.rewards = [(reward_fns or {}).get(name) or reward_fn(name) for name in config.rewards]
        self.reward_weights = config.reward_weights or [1.0] * len(config.rewards)
        self.train_problems = list(train_problems) if train_problems is not None else self._load(config.train_split)
        if config.max_train_problems:
            self.train_problems = self.train_problems[: config.max_train_problems]
        if not self.train_problems:
            raise TrainingError(f"dataset {config.dataset!r} split {config.train_split!r} has no problems")
        self.eval_problems = list(eval_problems) if eval_problems is not None else None

    def train(self) -> TrainResult:
        config = self.config
        rewards = WeightedRewards(self.rewards, self.reward_weights)
        run = build_components(config, self.train_problems, rewards, self.checkpoint)
        state = run.state
        if run.provider.config.sync_every:  # the server may run any model: send the starting (or resumed) policy
            sync_policy(run, state.step, now=True)

        interrupted = False
        with StopSignals() as signals:
            try:
                if config.eval_every and state.step == 0:
                    self._log(run, {"step": 0, **evaluate(run, self._eval_problems())})
                while state.step < config.steps:
                    step = state.step + 1
                    record, completions = train_step(run, step)
                    if run.metrics_log is not None and config.log_completions:
                        run.metrics_log.log_completions(step, completions)
                    state.step, state.data, state.synced_step = step, run.prompts.position, run.provider.synced_step
                    if config.eval_every and step % config.eval_every == 0:
                        record.update(evaluate(run, self._eval_problems()))
                    self._log(run, record)
                    stopping = run.processes.most(signals.received is not None) > 0  # a signal to any process stops all
                    if stopping or step == config.steps or (config.save_every and step % config.save_every == 0):
                        _save(run)
                    if stopping:
                        signal_name = signals.received or "another process's signal"
                        logger.warning("%s: saved a checkpoint at step %d and stopped", signal_name, step)
                        interrupted = True
                        break
            finally:
                if run.metrics_log is not None:
                    run.metrics_log.close()
        return TrainResult(self.output_dir, state.step, interrupted)

    def _load(self, split: str) -> list[Problem]:
        return load_problems(self.config.dataset, split, **self.config.dataset_kwargs)

    def _eval_problems(self) -> list[Problem]:
        if self.eval_problems is None:
            self.eval_problems = self._load(self.config.eval_split)
        return self.eval_problems[: self.config.eval_problems]

    def _log(self, run: Components, record: dict[str, Any]) -> None:
        if run.metrics_log is None:  # not the main process: its samples are in the main process's record
            return
        run.metrics_log.log(record)
        if self.on_step is not None:
            self.on_step(record)


def train_step(run: Components, step: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One optimizer step's work; returns its metrics record and (with `log_completions`) every process's samples."""
    started = time.perf_counter()
    rollouts = collect(run)
    record = {"step": step, **rollouts.metrics}
    if run.processes.fewest(len(rollouts.groups)) == 0:  # DDP needs every process in every update
        rounds = record["rounds"]
        logger.warning("step %d: every group had equal rewards after %d rounds; no update", step, rounds)
        record.update(skipped=1, **slowest(run.processes, {"time/step_s": time.perf_counter() - started}))
        record.update(_replica_checksums(run, step))
        return _ordered(record), rollouts.completions

    batch = assemble(rollouts.groups, run.config, run.tokenizer.pad_token_id)

    scoring_started = time.perf_counter()
    weights = token_weights(run, batch)
    score_s = time.perf_counter() - scoring_started
    record.update(weighting_metrics(run, weights, batch, step))

    update_started = time.perf_counter()
    record.update(update_metrics(run.processes, update(run, batch, weights.weights)))
    sync_policy(run, step)  # the scorer follows the policy ...
    run.generator.follow()  # ... and so does vLLM
    update_s = time.perf_counter() - update_started

    step_s = time.perf_counter() - started
    timings = slowest(run.processes, {SCORE_SECONDS: score_s, "time/update_s": update_s, "time/step_s": step_s})
    score_s, step_s = timings[SCORE_SECONDS], timings["time/step_s"]
    record.update(timings)
    record["scoring_overhead_pct"] = 100 * score_s / max(step_s - score_s, 1e-9)
    record["lr"] = run.scheduler.get_last_lr()[0]
    record.update(_replica_checksums(run, step))
    return _ordered(record), rollouts.completions


def checkpoint_to_resume(output_dir: Path, resume: bool | str | Path) -> Path | None:
    """The checkpoint `resume` names (None: a fresh run, which refuses a directory that has checkpoints)."""
    if resume is False or resume is None:
        if list_checkpoints(output_dir):
            raise TrainingError(
                f"{output_dir} already has checkpoints: pass --resume to continue that run, "
                "or choose another output_dir"
            )
        return None
    found = latest_checkpoint(output_dir) if resume is True else Path(resume)
    if found is None:
        raise TrainingError(f"--resume: {output_dir} has no checkpoint to resume from")
    if not (found / "state.pt").is_file():
        raise TrainingError(f"--resume: {found} is not a checkpoint (no state.pt)")
    return found


def _save(run: Components) -> None:
    process_rng = run.processes.gather(rng_states())
    if run.processes.is_main:
        config = run.config
        args = (run.state, run.policy, run.tokenizer, run.optimizer, run.scheduler, config.to_yaml())
        path = save_checkpoint(run.output_dir, *args, config.keep_checkpoints, process_rng=process_rng)
        logger.info("checkpoint %s", path)
    run.processes.barrier()


def _replica_checksums(run: Components, step: int) -> dict[str, Any]:
    """`log_param_checksum`: every process's parameter digest, which DDP keeps equal."""
    if not run.config.log_param_checksum:
        return {}
    digests = run.processes.gather(param_checksum(run.policy))
    if len(set(digests)) > 1:
        raise TrainingError(f"step {step}: the processes' parameters differ (sha256 {digests})")
    return {"params/sha256": digests}


def _ordered(record: dict[str, Any]) -> dict[str, Any]:
    """`step` first, the histogram last: the JSONL reads well by eye."""
    hist = record.pop(WEIGHT_HISTOGRAM, None)
    ordered = {"step": record.pop("step"), **record}
    if hist is not None:
        ordered[WEIGHT_HISTOGRAM] = hist
    return ordered
