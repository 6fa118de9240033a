"""Everything one training run holds, built once by `build_components` into a typed `Components`.

The order of construction is part of a run's reproducibility (LoRA's initialisation draws random
numbers; a resumed run restores the random state after the model is built): seed, accelerator,
policy, optimizer, scheduler, reference, `accelerator.prepare`, per-process seed, checkpoint
state, output files, weight provider, prompt sampler, generator.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from ccapo_adapters import WeightProvider
from torch.optim.lr_scheduler import LRScheduler
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_scheduler

from ccapo import Scorer
from ccapo.models import load_model, resolve_model
from ccapo_trainer.checkpoint import TrainState, load_state
from ccapo_trainer.config import TrainConfig
from ccapo_trainer.data import Problem
from ccapo_trainer.distributed import LaunchError, Processes, launched_accelerator
from ccapo_trainer.errors import TrainingError
from ccapo_trainer.generator import Generator
from ccapo_trainer.metrics import MetricsLog
from ccapo_trainer.prompts import PromptSampler
from ccapo_trainer.rewards import WeightedRewards
from ccapo_trainer.rollout import Sampling
from ccapo_trainer.weighting import weight_provider

logger = logging.getLogger(__name__)


@dataclass
class Components:
    """One run's objects; the stages in `ccapo_trainer.stages` read what they need from here."""

    config: TrainConfig
    output_dir: Path
    processes: Processes  # this process's rank among all, and the collective calls between them
    model: torch.nn.Module  # what the optimizer steps (DDP-wrapped in a multi-process run)
    policy: PreTrainedModel  # the same model, unwrapped: generation, scoring, checkpoints
    reference: PreTrainedModel | None  # the frozen initial policy of the KL term (None when beta is 0)
    tokenizer: PreTrainedTokenizerBase
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    provider: WeightProvider  # the token weights (in-process: the policy scores; remote: a server)
    # The uniform arm's provider scores nothing, yet segmenting (no forward pass) shows where the weight
    # mass would sit (`ccapo/weights/calc_mass`); every other arm has no segmenter: one scorer per run at most.
    segmenter: Scorer | None
    generator: Generator
    rewards: WeightedRewards
    prompts: PromptSampler
    state: TrainState  # step, data position and synced step: what a checkpoint stores besides weights
    metrics_log: MetricsLog | None  # only the main process writes the run's files

    @property
    def accelerator(self) -> Accelerator:
        return self.processes.accelerator


def build_components(
    config: TrainConfig, problems: Sequence[Problem], rewards: WeightedRewards, checkpoint: Path | None
) -> Components:
    """The run's objects, from `checkpoint` when resuming (its weights, optimizer, scheduler, RNG and data position)."""
    output_dir = Path(config.output_dir)
    _seed_everything(config.seed)
    mixed = "bf16" if config.bf16 and torch.cuda.is_available() else "no"
    try:
        accelerator = launched_accelerator(mixed)
    except LaunchError as err:
        raise TrainingError(str(err)) from None
    model, tokenizer = _policy(config, accelerator, checkpoint)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=config.learning_rate, betas=config.adam_betas, weight_decay=config.weight_decay
    )
    scheduler = lr_schedule(optimizer, config)
    reference = _reference(config, model, accelerator)
    model, optimizer = accelerator.prepare(model, optimizer)
    policy = accelerator.unwrap_model(model)
    processes = Processes(accelerator)
    if processes.count > 1:  # the same weights everywhere (DDP broadcast them), but each process its own samples
        _seed_everything(config.seed + processes.rank)

    state = TrainState()
    if checkpoint is not None:
        state = load_state(checkpoint, optimizer, scheduler, processes.rank, processes.count)
        logger.info("resuming from %s (step %d)", checkpoint, state.step)
    output_dir.mkdir(parents=True, exist_ok=True)
    metrics_log = None
    if processes.is_main:
        (output_dir / "config.yaml").write_text(config.to_yaml())
        metrics_log = MetricsLog(output_dir, state.step if checkpoint else None, config.tensorboard)
    provider = weight_provider(config, policy, tokenizer)
    provider.synced_step = state.synced_step
    prompts = PromptSampler(
        problems,
        tokenizer,
        system_prompt=config.system_prompt,
        max_prompt_length=config.max_prompt_length,
        seed=config.seed,
        position=state.data,
        rank=processes.rank,
        world=processes.count,
    )
    return Components(
        config=config,
        output_dir=output_dir,
        processes=processes,
        model=model,
        policy=policy,
        reference=reference,
        tokenizer=tokenizer,
        optimizer=optimizer,
        scheduler=scheduler,
        provider=provider,
        segmenter=Scorer(policy, tokenizer) if config.counterfactual.weighting == "uniform" else None,
        generator=_generator(config, policy, tokenizer, accelerator),
        rewards=rewards,
        prompts=prompts,
        state=state,
        metrics_log=metrics_log,
    )


def _policy(
    config: TrainConfig, accelerator: Accelerator, checkpoint: Path | None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    full_checkpoint = checkpoint is not None and config.lora is None
    source = str(checkpoint / "model") if full_checkpoint else config.model
    # fp32 master weights unless asked otherwise: bf16 runs as autocast on CUDA.
    dtype = config.dtype or torch.float32
    model, tokenizer = load_model(source, accelerator.device, dtype, trust_remote_code=config.trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if config.lora is not None:
        model = _with_lora(model, config, checkpoint)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if config.lora is not None:
            model.enable_input_require_grads()
    model.train()
    return model, tokenizer


def _with_lora(model: PreTrainedModel, config: TrainConfig, checkpoint: Path | None) -> PreTrainedModel:
    try:
        from peft import LoraConfig, PeftModel, get_peft_model
    except ImportError:
        raise TrainingError("lora needs peft: pip install '.[lora]' from a clone") from None
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


def _reference(config: TrainConfig, model: PreTrainedModel, accelerator: Accelerator) -> PreTrainedModel | None:
    """The frozen initial policy for the KL term: the base model under the adapter, or a second copy."""
    if config.beta == 0:
        return None
    if config.lora is not None:
        return model  # with its adapter disabled, see `stages.update`
    ref, _ = load_model(config.model, device=accelerator.device, dtype=config.dtype or torch.float32)
    ref.requires_grad_(False)
    return ref


def _generator(
    config: TrainConfig, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, accelerator: Accelerator
) -> Generator:
    sampling = Sampling(
        max_new_tokens=config.max_completion_length,
        temperature=config.temperature,
        top_p=config.top_p,
        batch_size=config.generation_batch_size,
    )
    vllm = None
    if config.use_vllm:
        from ccapo_trainer.vllm_rollout import VllmGenerator

        try:
            vllm = VllmGenerator(
                resolve_model(config.model),
                seed=config.seed,
                max_model_len=config.max_prompt_length + config.max_completion_length,
                gpu_memory_utilization=config.vllm_gpu_memory_utilization,
            )
        except RuntimeError as err:
            raise TrainingError(str(err)) from None
        vllm.sync(policy)  # a resumed policy differs from the files vLLM loaded
    return Generator(policy, tokenizer, sampling, accelerator, vllm)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# transformers' "constant" schedule ignores warm-up steps; "constant_with_warmup" is constant after them.
_SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


def lr_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig) -> LRScheduler:
    """Linear warm-up over `warmup_steps`, then constant or decayed to 0 at the run's last update."""
    updates = config.steps * config.num_iterations
    return get_scheduler(_SCHEDULES[config.lr_scheduler], optimizer, config.warmup_steps, updates)
