"""The warm start: a short supervised run on noisy gold solutions, cached on disk and shared by every arm.

Some solutions carry an arithmetic slip, so the model learns the format and most of the
arithmetic but not all of it: it starts well above zero and well below perfect, with wrong
answers left for RL to fix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from platformdirs import user_cache_dir
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ccapo_trainer.data import Problem, prompt_messages
from ccapo_trainer.evaluate import greedy_accuracy
from ccapo_trainer.testbed.model import ModelShape, tiny_model
from ccapo_trainer.testbed.reward import exact_reward
from ccapo_trainer.testbed.task import TaskConfig, arith_problems, slipped_solution
from ccapo_trainer.testbed.tokenizer import build_tokenizer

logger = logging.getLogger(__name__)

# Bump when the recipe changes in a way the settings do not show, so old caches are not reused.
RECIPE_VERSION = 1
METADATA = "testbed.json"


@dataclass(frozen=True)
class WarmStartConfig:
    train_steps: int = 600
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 30
    noise_rate: float = 0.25  # share of training solutions with one arithmetic slip
    eval_size: int = 256  # held-out problems for the accuracy recorded in testbed.json (0: skip)
    max_new_tokens: int = 96
    model: ModelShape = field(default_factory=ModelShape)

    @classmethod
    def smoke(cls) -> WarmStartConfig:
        """A few seconds' run for tests: the format is barely learned."""
        return cls(train_steps=20, batch_size=16, warmup_steps=2, eval_size=16, max_new_tokens=48)


def cache_root() -> Path:
    """Where warm starts live: $CCAPO_CACHE/testbed, else the user's cache directory."""
    return Path(os.environ.get("CCAPO_CACHE") or user_cache_dir("ccapo")) / "testbed"


def warm_start(
    task: TaskConfig | None = None,
    *,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    config: WarmStartConfig | None = None,
) -> Path:
    """The directory of the warm-started model and tokenizer for these settings, trained on first use.

    The directory (under `cache_dir`, default `cache_root()`) is named by a hash of every setting;
    it holds `save_pretrained` output of both plus testbed.json (settings, held-out accuracy, time).
    """
    task, config = task or TaskConfig(), config or WarmStartConfig()
    settings = {"recipe": RECIPE_VERSION, "seed": seed, "task": asdict(task), "warm_start": asdict(config)}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    target = Path(cache_dir) if cache_dir is not None else cache_root()
    target = target / key
    if (target / METADATA).is_file():
        logger.info("warm start cached at %s", target)
        return target

    logger.info(
        "warm start %s: %d steps of batch %d (once; cached at %s)", key, config.train_steps, config.batch_size, target
    )
    started = time.perf_counter()
    tokenizer = build_tokenizer()
    model = tiny_model(tokenizer, seed, config.model)
    final_loss = _train(model, tokenizer, task, config, seed)
    metadata: dict[str, object] = {**settings, "train_seconds": round(time.perf_counter() - started, 1)}
    metadata["final_loss"] = round(final_loss, 4)
    if config.eval_size:
        held_out = arith_problems(config.eval_size, seed, task, split="test")
        result = greedy_accuracy(
            model, tokenizer, held_out, max_new_tokens=config.max_new_tokens, reward_fn=exact_reward
        )
        metadata["eval_accuracy"] = result.accuracy
        logger.info("warm start %s: greedy held-out accuracy %.3f", key, metadata["eval_accuracy"])
    _save_atomically(model, tokenizer, metadata, target)
    return target


def load_warm_start(path: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model (fp32, eval mode) and tokenizer that `warm_start` saved in `path`."""
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)


def _train(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: TaskConfig, config: WarmStartConfig, seed: int
) -> float:
    """Supervised training on completions only (prompt tokens carry no loss); the last logged loss."""
    problems = arith_problems(config.train_steps * config.batch_size, seed, task, split="train")
    rng = random.Random(seed)
    solutions = [
        slipped_solution(rng, p, task.filler_rate) if rng.random() < config.noise_rate else p.solution for p in problems
    ]
    examples = _encode(tokenizer, problems, solutions)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.98), weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, config))
    model.train()
    log_every = max(1, config.train_steps // 20)
    started, running = time.perf_counter(), 0.0
    for step in range(config.train_steps):
        batch = examples[step * config.batch_size : (step + 1) * config.batch_size]
        input_ids, labels, attention_mask = _collate(batch, tokenizer.pad_token_id)
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        running = loss.item() if step == 0 else 0.9 * running + 0.1 * loss.item()
        if (step + 1) % log_every == 0 or step + 1 == config.train_steps:
            elapsed = time.perf_counter() - started
            eta = elapsed / (step + 1) * (config.train_steps - step - 1)
            logger.info(
                "warm start step %d/%d: loss %.3f (%.0fs, about %.0fs left)",
                step + 1,
                config.train_steps,
                running,
                elapsed,
                eta,
            )
    model.eval()
    return running


def _encode(
    tokenizer: PreTrainedTokenizerBase, problems: list[Problem], solutions: list[str | None]
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids ending in EOS) per problem, prompts as the trainer builds them."""
    prompts = [
        tokenizer.apply_chat_template(prompt_messages(p), tokenize=False, add_generation_prompt=True) for p in problems
    ]
    prompt_ids = tokenizer(prompts, add_special_tokens=False).input_ids
    completion_ids = tokenizer([s or "" for s in solutions], add_special_tokens=False).input_ids
    return [(p, [*c, tokenizer.eos_token_id]) for p, c in zip(prompt_ids, completion_ids, strict=True)]


def _collate(batch: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(p) + len(c) for p, c in batch)
    input_ids = torch.full((len(batch), width), pad_id)
    labels = torch.full((len(batch), width), -100)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (prompt, completion) in enumerate(batch):
        ids = prompt + completion
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, len(prompt) : len(ids)] = torch.tensor(completion)
        attention_mask[row, : len(ids)] = 1
    return input_ids, labels, attention_mask


def _lr_factor(step: int, config: WarmStartConfig) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.train_steps - config.warmup_steps)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress)))


def _save_atomically(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, metadata: dict[str, object], target: Path
) -> None:
    """Write into a staging directory and rename it, so a crash never leaves a half-written cache."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / METADATA).write_text(json.dumps(metadata, indent=2) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
