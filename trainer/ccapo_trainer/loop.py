"""The GRPO/DAPO training loop, one stage per function: rollout -> reward -> advantage -> weight -> loss.

A step collects `prompts_per_step` groups of `num_generations` samples that carry a learning signal
(dynamic sampling drops groups whose rewards are all equal and draws further prompts), weights
their tokens, and takes one optimizer step per `num_iterations` over them in micro-batches whose
losses add up exactly to the full batch's.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_scheduler

from ccapo import Scorer
from ccapo.models import load_model, resolve_model
from ccapo_trainer.advantages import group_advantages, zero_variance_groups
from ccapo_trainer.checkpoint import (
    DataPosition,
    TrainState,
    latest_checkpoint,
    list_checkpoints,
    load_state,
    rng_states,
    save_checkpoint,
)
from ccapo_trainer.config import TrainConfig
from ccapo_trainer.data import Problem, encode_prompt, load_problems
from ccapo_trainer.distributed import (
    LaunchError,
    Processes,
    RolloutStats,
    launched_accelerator,
    param_checksum,
    rollout_metrics,
    slowest,
    update_metrics,
    weight_metrics,
)
from ccapo_trainer.evaluate import greedy_accuracy
from ccapo_trainer.loss import policy_loss
from ccapo_trainer.metrics import MetricsLog
from ccapo_trainer.rewards import RewardFn, reward_fn
from ccapo_trainer.rollout import (
    Completions,
    Sampling,
    chunked,
    completion_logprobs,
    decode,
    generate,
    pad_right,
    stop_token_ids,
)
from ccapo_trainer.weighting import segment_only, weight_provider

logger = logging.getLogger(__name__)

StepCallback = Callable[[dict[str, Any]], None]


class TrainingError(RuntimeError):
    """A run that cannot start or go on for a reason the user must fix."""


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path
    step: int
    interrupted: bool  # stopped by SIGTERM/Ctrl-C after saving a checkpoint


@dataclass
class _Group:
    """One prompt's G samples."""

    problem: Problem
    prompt: list[int]
    ids: torch.Tensor  # (G, T)
    mask: torch.Tensor  # (G, T)
    truncated: torch.Tensor  # (G,)
    rewards: torch.Tensor  # (G,)
    correct: torch.Tensor  # (G,) bool: the first reward (the task's correctness) gave full marks


class _Sampler:
    """Prompts in a seeded order per epoch; the position is part of every checkpoint."""

    def __init__(self, size: int, seed: int, position: DataPosition, rank: int = 0, world: int = 1):
        self.size, self.seed, self.position, self.rank, self.world = size, seed, position, rank, world
        self._order = self._permutation()

    def take(self, n: int) -> list[int]:
        taken = []
        while len(taken) < n:
            if self.position.cursor >= self.size:
                self.position = DataPosition(self.position.epoch + 1, 0)
                self._order = self._permutation()
            index = self.position.cursor + self.rank  # processes take interleaved prompts
            self.position.cursor += self.world
            if index < self.size:
                taken.append(self._order[index])
        return taken

    def _permutation(self) -> list[int]:
        order = list(range(self.size))
        random.Random(self.seed * 1_000_003 + self.position.epoch).shuffle(order)
        return order


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
        self.checkpoint = self._checkpoint_to_resume(resume)
        self.rewards = [(reward_fns or {}).get(name) or reward_fn(name) for name in config.rewards]
        self.reward_weights = config.reward_weights or [1.0] * len(config.rewards)
        self.train_problems = list(train_problems) if train_problems is not None else self._load(config.train_split)
        if config.max_train_problems:
            self.train_problems = self.train_problems[: config.max_train_problems]
        if not self.train_problems:
            raise TrainingError(f"dataset {config.dataset!r} split {config.train_split!r} has no problems")
        self.eval_problems = list(eval_problems) if eval_problems is not None else None
        self._stop_signal: str | None = None

    # -- set-up ---------------------------------------------------------------------------------

    def _checkpoint_to_resume(self, resume: bool | str | Path) -> Path | None:
        if resume is False or resume is None:
            if list_checkpoints(self.output_dir):
                raise TrainingError(
                    f"{self.output_dir} already has checkpoints: pass --resume to continue that run, "
                    "or choose another output_dir"
                )
            return None
        found = latest_checkpoint(self.output_dir) if resume is True else Path(resume)
        if found is None:
            raise TrainingError(f"--resume: {self.output_dir} has no checkpoint to resume from")
        if not (found / "state.pt").is_file():
            raise TrainingError(f"--resume: {found} is not a checkpoint (no state.pt)")
        return found

    def _load(self, split: str) -> list[Problem]:
        return load_problems(self.config.dataset, split, **self.config.dataset_kwargs)

    def _build_model(self, accelerator: Accelerator) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        config = self.config
        full_checkpoint = self.checkpoint is not None and config.lora is None
        source = str(self.checkpoint / "model") if full_checkpoint else config.model
        # fp32 master weights unless asked otherwise: bf16 runs as autocast on CUDA.
        dtype = config.dtype or torch.float32
        model, tokenizer = load_model(source, accelerator.device, dtype, trust_remote_code=config.trust_remote_code)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if config.lora is not None:
            model = _with_lora(model, config, self.checkpoint)
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if config.lora is not None:
                model.enable_input_require_grads()
        model.train()
        return model, tokenizer

    def _reference(self, model: PreTrainedModel, accelerator: Accelerator):
        """The frozen initial policy for the KL term: the base model under the adapter, or a second copy."""
        if self.config.beta == 0:
            return None
        if self.config.lora is not None:
            return model  # with its adapter disabled, see `_reference_logprobs`
        ref, _ = load_model(self.config.model, device=accelerator.device, dtype=self.config.dtype or torch.float32)
        ref.requires_grad_(False)
        return ref

    # -- the run --------------------------------------------------------------------------------

    def train(self) -> TrainResult:
        config = self.config
        _seed_everything(config.seed)
        mixed = "bf16" if config.bf16 and torch.cuda.is_available() else "no"
        try:
            accelerator = launched_accelerator(mixed)
        except LaunchError as err:
            raise TrainingError(str(err)) from None
        model, tokenizer = self._build_model(accelerator)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params, lr=config.learning_rate, betas=config.adam_betas, weight_decay=config.weight_decay
        )
        scheduler = get_scheduler(
            config.lr_scheduler, optimizer, config.warmup_steps, config.steps * config.num_iterations
        )
        reference = self._reference(model, accelerator)
        model, optimizer = accelerator.prepare(model, optimizer)
        policy = accelerator.unwrap_model(model)
        processes = Processes(accelerator)
        if processes.count > 1:  # the same weights everywhere (DDP broadcast them), but each process its own samples
            _seed_everything(config.seed + processes.rank)

        state = TrainState()
        if self.checkpoint is not None:
            state = load_state(self.checkpoint, optimizer, scheduler, processes.rank, processes.count)
            logger.info("resuming from %s (step %d)", self.checkpoint, state.step)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        metrics_log = None  # only the main process writes the run's files
        if processes.is_main:
            (self.output_dir / "config.yaml").write_text(config.to_yaml())
            metrics_log = MetricsLog(self.output_dir, state.step if self.checkpoint else None, config.tensorboard)
        provider = weight_provider(config, policy, tokenizer, self.output_dir)
        provider.synced_step = state.synced_step
        sampler = _Sampler(len(self.train_problems), config.seed, state.data, processes.rank, processes.count)
        prompt_cache: dict[int, list[int]] = {}
        run = _Run(self, processes, model, policy, tokenizer, optimizer, scheduler, reference, provider)
        if provider.config.sync_every:  # the server may run any model: send the starting (or resumed) policy
            run.sync_policy(state.step, now=True)

        interrupted = False
        with self._signals():
            try:
                if config.eval_every and state.step == 0:
                    self._log(metrics_log, {"step": 0, **run.evaluate(self._eval_problems())})
                while state.step < config.steps:
                    step = state.step + 1
                    record = run.step(step, sampler, prompt_cache)
                    if metrics_log is not None and config.log_completions:
                        metrics_log.log_completions(step, run.completions)
                    state.step, state.data, state.synced_step = step, sampler.position, provider.synced_step
                    if config.eval_every and step % config.eval_every == 0:
                        record.update(run.evaluate(self._eval_problems()))
                    self._log(metrics_log, record)
                    stopping = processes.most(self._stop_signal is not None) > 0  # a signal to any process stops all
                    if stopping or step == config.steps or (config.save_every and step % config.save_every == 0):
                        self._save(processes, state, policy, tokenizer, optimizer, scheduler)
                    if stopping:
                        signal_name = self._stop_signal or "another process's signal"
                        logger.warning("%s: saved a checkpoint at step %d and stopped", signal_name, step)
                        interrupted = True
                        break
            finally:
                if metrics_log is not None:
                    metrics_log.close()
        return TrainResult(self.output_dir, state.step, interrupted)

    def _eval_problems(self) -> list[Problem]:
        if self.eval_problems is None:
            self.eval_problems = self._load(self.config.eval_split)
        return self.eval_problems[: self.config.eval_problems]

    def _log(self, metrics_log: MetricsLog | None, record: dict[str, Any]) -> None:
        if metrics_log is None:  # not the main process: its samples are in the main process's record
            return
        metrics_log.log(record)
        if self.on_step is not None:
            self.on_step(record)

    def _save(self, processes: Processes, state: TrainState, policy, tokenizer, optimizer, scheduler) -> None:
        process_rng = processes.gather(rng_states())
        if processes.is_main:
            config = self.config
            args = (state, policy, tokenizer, optimizer, scheduler, config.to_yaml(), config.keep_checkpoints)
            path = save_checkpoint(self.output_dir, *args, process_rng=process_rng)
            logger.info("checkpoint %s", path)
        processes.barrier()

    @contextmanager
    def _signals(self):
        """SIGTERM or Ctrl-C: finish the current step, save a checkpoint, stop. A second Ctrl-C aborts."""

        def request_stop(signum, frame):
            name = signal.Signals(signum).name
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_signal = name
            logger.warning("%s: finishing this step, then saving a checkpoint (Ctrl-C again to abort)", name)

        try:
            previous = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        except ValueError:  # not the main thread: signals stay with whoever owns them
            previous = {}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class _Run:
    """The objects of one run and the stages of its steps."""

    def __init__(self, trainer, processes, model, policy, tokenizer, optimizer, scheduler, reference, provider):
        self.trainer = trainer
        self.config = trainer.config
        self.processes = processes
        self.accelerator = processes.accelerator
        self.model = model  # what the optimizer steps (maybe DDP-wrapped)
        self.policy = policy  # the same model, unwrapped: generation and scoring
        self.tokenizer = tokenizer
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.reference = reference
        self.provider = provider
        # The provider's scorer serves every other arm; uniform's provider has none, and segmenting
        # for its weight metrics needs one: never two scorers of one policy.
        self.scorer = Scorer(policy, tokenizer) if self.config.weighting == "uniform" else None
        self.pad_id = tokenizer.pad_token_id
        self.completions: list[dict[str, Any]] = []  # the last step's samples, every process's
        self.vllm = None
        if self.config.use_vllm:
            from ccapo_trainer.vllm_rollout import VllmGenerator

            try:
                self.vllm = VllmGenerator(
                    resolve_model(self.config.model),
                    seed=self.config.seed,
                    max_model_len=self.config.max_prompt_length + self.config.max_completion_length,
                    gpu_memory_utilization=self.config.vllm_gpu_memory_utilization,
                )
            except RuntimeError as err:
                raise TrainingError(str(err)) from None
            self.vllm.sync(policy)  # a resumed policy differs from the files vLLM loaded
        self.sampling = Sampling(
            max_new_tokens=self.config.max_completion_length,
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            batch_size=self.config.generation_batch_size,
        )

    def step(self, step: int, sampler: _Sampler, prompt_cache: dict[int, list[int]]) -> dict[str, Any]:
        started = time.perf_counter()
        groups, record = self.collect(sampler, prompt_cache)
        record["step"] = step
        if self.processes.fewest(len(groups)) == 0:  # DDP needs every process in every update
            rounds = record["rounds"]
            logger.warning("step %d: every group had equal rewards after %d rounds; no update", step, rounds)
            record.update(skipped=1, **slowest(self.processes, {"time/step_s": time.perf_counter() - started}))
            record.update(self._replica_checksums(step))
            return _ordered(record)

        g = self.config.num_generations
        prompts = [group.prompt for group in groups for _ in range(g)]
        width = max(group.ids.shape[1] for group in groups)
        ids = torch.cat([pad_right(group.ids, width, self.pad_id) for group in groups])
        mask = torch.cat([pad_right(group.mask, width, 0) for group in groups])
        rewards = torch.cat([group.rewards for group in groups])
        advantages = group_advantages(rewards, g, self.config.scale_rewards)
        loss_mask = mask.clone()
        if self.config.mask_truncated_completions:
            truncated = torch.cat([group.truncated for group in groups])
            loss_mask[truncated] = 0

        scoring_started = time.perf_counter()
        answers = [group.problem.answer for group in groups for _ in range(g)]
        with self.accelerator.autocast():  # bf16 on CUDA, like the update; a no-op on CPU
            batch = self.provider.weights(prompts, ids, completion_mask=mask, reference_answers=answers)
            if self.config.weighting == "uniform":
                segment_only(self.scorer, batch, prompts, ids, mask, answers, self.config)
        score_s = time.perf_counter() - scoring_started
        record.update(weight_metrics(self.processes, batch, mask))
        if self.provider.config.provider == "remote":  # step's rollouts came from the policy after step - 1
            record["weighting/version_lag"] = float(step - 1 - self.provider.synced_step)

        update_started = time.perf_counter()
        record.update(update_metrics(self.processes, self.update(prompts, ids, loss_mask, advantages, batch.weights)))
        self.sync_policy(step)
        if self.vllm is not None:
            self.vllm.sync(self.policy)
        update_s = time.perf_counter() - update_started

        step_s = time.perf_counter() - started
        timings = slowest(self.processes, {"time/score_s": score_s, "time/update_s": update_s, "time/step_s": step_s})
        score_s, step_s = timings["time/score_s"], timings["time/step_s"]
        record.update(timings)
        record["scoring_overhead_pct"] = 100 * score_s / max(step_s - score_s, 1e-9)
        record["lr"] = self.scheduler.get_last_lr()[0]
        record.update(self._replica_checksums(step))
        return _ordered(record)

    def sync_policy(self, step: int, now: bool = False) -> None:
        """Push the policy to the scoring server (every `sync_every` steps, or `now`). The main process
        saves and sends it once for all; the others wait for it and take its synced step."""
        if self.processes.is_main:
            if now:
                self.provider.sync(self.policy, self.tokenizer, step)
            else:
                self.provider.maybe_sync(self.policy, self.tokenizer, step)
        self.provider.synced_step = self.processes.from_main(self.provider.synced_step)

    def _replica_checksums(self, step: int) -> dict[str, Any]:
        """`log_param_checksum`: every process's parameter digest, which DDP keeps equal."""
        if not self.config.log_param_checksum:
            return {}
        digests = self.processes.gather(param_checksum(self.policy))
        if len(set(digests)) > 1:
            raise TrainingError(f"step {step}: the processes' parameters differ (sha256 {digests})")
        return {"params/sha256": digests}

    # -- rollout and reward -----------------------------------------------------------------------

    def collect(self, sampler: _Sampler, prompt_cache: dict[int, list[int]]) -> tuple[list[_Group], dict[str, Any]]:
        """Groups with a learning signal, drawing more prompts while dynamic sampling drops groups."""
        config = self.config
        kept: list[_Group] = []
        seen: list[_Group] = []
        reward_failures = 0
        generate_s = 0.0
        rounds = 0
        completions = []
        while rounds < config.max_sampling_rounds:
            # Every process takes as many prompts as the neediest one, so that the processes' sampler
            # positions stay in step; one that needs fewer generates for the first ones only.
            wanted = config.prompts_per_step - len(kept)
            needed = int(self.processes.most(wanted))
            if needed <= 0:
                break
            rounds += 1
            indices = sampler.take(needed)[:wanted]
            problems, prompts = [], []
            for index in indices:
                prompt = prompt_cache.get(index)
                if prompt is None:
                    prompt = prompt_cache[index] = encode_prompt(
                        self.tokenizer, self.trainer.train_problems[index], config.system_prompt
                    )
                if len(prompt) > config.max_prompt_length:
                    limit = config.max_prompt_length
                    logger.warning("skipping problem %d: its prompt has %d tokens (max %d)", index, len(prompt), limit)
                    continue
                problems.append(self.trainer.train_problems[index])
                prompts.append(prompt)
            if not prompts:
                continue
            gen_started = time.perf_counter()
            g = config.num_generations
            out = self.generate([p for p in prompts for _ in range(g)])
            generate_s += time.perf_counter() - gen_started
            texts = decode(self.tokenizer, out)
            rewards, correct, failures = self.reward(texts, [p for p in problems for _ in range(g)])
            reward_failures += failures
            if config.log_completions:
                completions += [
                    {"problem": p.question, "completion": text, "reward": reward}
                    for p, text, reward in zip([p for p in problems for _ in range(g)], texts, rewards, strict=True)
                ]
            rewards, correct = torch.tensor(rewards), torch.tensor(correct)
            dead = zero_variance_groups(rewards, g)
            for k, (problem, prompt) in enumerate(zip(problems, prompts, strict=True)):
                rows = slice(k * g, (k + 1) * g)
                group = _Group(
                    problem, prompt, out.ids[rows], out.mask[rows], out.truncated[rows], rewards[rows], correct[rows]
                )
                seen.append(group)
                if not (config.dynamic_sampling and dead[k]):
                    kept.append(group)
        stats = self.processes.gather(_rollout_stats(seen, kept, rounds, reward_failures, generate_s, completions))
        self.completions = [{"process": rank, **row} for rank, s in enumerate(stats) for row in s.completions]
        return kept[: config.prompts_per_step], rollout_metrics(stats)

    def generate(self, prompts: list[list[int]]) -> Completions:
        if self.vllm is not None:
            return self.vllm.generate(prompts, self.sampling, stop_token_ids(self.policy, self.tokenizer), self.pad_id)
        with self.accelerator.autocast():
            return generate(self.policy, self.tokenizer, prompts, self.sampling)

    def reward(self, texts: Sequence[str], problems: Sequence[Problem]) -> tuple[list[float], list[bool], int]:
        """Per sample: the weighted sum of the reward functions, whether the first one (the task's
        correctness) gave full marks, and the number of reward calls that raised (each scores 0)."""
        totals, correct, failures = [], [], 0
        for text, problem in zip(texts, problems, strict=True):
            values = []
            for fn in self.trainer.rewards:
                try:
                    values.append(float(fn(text, problem.answer)))
                except Exception as err:  # one bad sample must not stop the run
                    failures += 1
                    values.append(0.0)
                    name = getattr(fn, "__name__", "function")
                    logger.warning("reward %s failed on a sample (%s: %s); it scores 0", name, type(err).__name__, err)
            totals.append(sum(w * v for w, v in zip(self.trainer.reward_weights, values, strict=True)))
            correct.append(values[0] >= 1.0)
        return totals, correct, failures

    # -- the update -----------------------------------------------------------------------------

    def update(self, prompts, ids, mask, advantages, weights) -> dict[str, float]:
        config = self.config
        n = ids.shape[0]
        device = self.accelerator.device
        ids, mask, advantages, weights = ids.to(device), mask.to(device), advantages.to(device), weights.to(device)
        batches = chunked(n, config.micro_batch_size)
        old = ref = None
        if config.num_iterations > 1 or config.beta:
            with torch.no_grad():
                if config.num_iterations > 1:
                    old = torch.cat([self._logprobs(self.model, prompts, ids, mask, mb)[0] for mb in batches])
                if config.beta:
                    ref = torch.cat([self._reference_logprobs(prompts, ids, mask, mb) for mb in batches])

        totals: dict[str, float] = {}
        # Shares of the global batch (every process's samples); DDP averages the processes' gradients,
        # so each process scales its loss by their count to get the global batch's gradient.
        tokens = max(self.processes.total(float(mask.sum())), 1.0)
        rows = self.processes.total(n)
        skipped = 0
        for iteration in range(config.num_iterations):
            for k, mb in enumerate(batches):
                sync = nullcontext() if k == len(batches) - 1 else self.accelerator.no_sync(self.model)
                with sync:
                    logprobs, entropy = self._logprobs(self.model, prompts, ids, mask, mb, with_entropy=iteration == 0)
                    out = policy_loss(
                        logprobs,
                        logprobs.detach() if old is None else old[mb],
                        advantages[mb],
                        mask[mb],
                        config.loss,
                        weights[mb],
                        None if ref is None else ref[mb],
                    )
                    share = self._share(mask, mb, tokens, rows)
                    self.accelerator.backward(out.loss * share * self.processes.count)
                if iteration == 0:
                    _accumulate(totals, {"loss": float(out.loss.detach()), **out.metrics}, share)
                    if entropy is not None:
                        mb_tokens = mask[mb].sum()
                        mean_entropy = float((entropy * mask[mb]).sum() / mb_tokens.clamp(min=1))
                        _accumulate(totals, {"entropy": mean_entropy}, float(mb_tokens / tokens))
            grad_norm = self._optimizer_step()
            if grad_norm is None:
                skipped += 1
            elif iteration == 0:
                totals["grad_norm"] = grad_norm
        totals["update/skipped"] = skipped
        return totals

    def _share(self, mask: torch.Tensor, mb: slice, tokens: float, rows: float) -> float:
        """This micro-batch's share of the global batch loss, so the shares' sum is the full batch's loss."""
        if self.config.loss_type == "dapo":
            return float(mask[mb].sum() / tokens)
        return (mb.stop - mb.start) / rows

    def _optimizer_step(self) -> float | None:
        """Clip, step, zero; a non-finite gradient skips the step (counted) instead of poisoning the weights."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.config.max_grad_norm is not None:
            norm = self.accelerator.clip_grad_norm_(params, self.config.max_grad_norm)
        else:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        norm = float(norm)
        if not math.isfinite(norm):
            logger.warning("non-finite gradient norm; skipping this optimizer step")
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def _logprobs(self, model, prompts, ids, mask, mb: slice, with_entropy: bool = False):
        with self.accelerator.autocast():
            return completion_logprobs(
                model, prompts[mb], ids[mb], mask[mb], self.pad_id, self.config.temperature, with_entropy
            )

    def _reference_logprobs(self, prompts, ids, mask, mb: slice) -> torch.Tensor:
        if self.config.lora is not None:
            with self.policy.disable_adapter():
                return self._logprobs(self.model, prompts, ids, mask, mb)[0]
        return self._logprobs(self.reference, prompts, ids, mask, mb)[0]

    def evaluate(self, problems: Sequence[Problem]) -> dict[str, float]:
        """Greedy accuracy; each process answers every `count`-th problem, from its rank on."""
        mine = list(problems)[self.processes.rank :: self.processes.count]
        correct = 0
        if mine:
            result = greedy_accuracy(
                self.policy,
                self.tokenizer,
                mine,
                max_new_tokens=self.config.max_completion_length,
                batch_size=self.config.eval_batch_size,
                system_prompt=self.config.system_prompt,
                reward_fn=self.trainer.rewards[0],
            )
            correct = result.correct
        total, right = self.processes.values([len(mine), correct]).sum(0).tolist()
        return {"eval/accuracy": right / max(total, 1), "eval/problems": int(total)}


def _with_lora(model: PreTrainedModel, config: TrainConfig, checkpoint: Path | None) -> PreTrainedModel:
    try:
        from peft import LoraConfig, PeftModel, get_peft_model
    except ImportError:
        raise TrainingError("lora needs peft: pip install 'ccapo[lora]'") from None
    if checkpoint is not None:
        return PeftModel.from_pretrained(model, checkpoint / "model", is_trainable=True)
    settings = config.lora
    lora = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def _rollout_stats(
    seen: list[_Group], kept: list[_Group], rounds: int, failures: int, generate_s: float, completions: list[dict]
) -> RolloutStats:
    def cat(parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts) if parts else torch.zeros(0)

    return RolloutStats(
        rewards=cat([g.rewards for g in seen]),
        correct=cat([g.correct for g in seen]),
        lengths=cat([g.mask.sum(-1) for g in seen]),
        truncated=cat([g.truncated for g in seen]),
        zero_variance=[bool((g.rewards == g.rewards[0]).all()) for g in seen],
        kept=len(kept),
        rounds=rounds,
        reward_failures=failures,
        generate_s=generate_s,
        completions=completions,
    )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _accumulate(totals: dict[str, float], values: dict[str, float], share: float) -> None:
    for key, value in values.items():
        totals[key] = totals.get(key, 0.0) + value * share


def _ordered(record: dict[str, Any]) -> dict[str, Any]:
    """`step` first, the histogram last: the JSONL reads well by eye."""
    hist = record.pop("weights/hist", None)
    ordered = {"step": record.pop("step"), **record}
    if hist is not None:
        ordered["weights/hist"] = hist
    return ordered
