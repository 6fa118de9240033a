"""Greedy held-out accuracy: the number a training run is judged by."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ccapo_trainer.data import Problem, encode_prompt
from ccapo_trainer.rewards import RewardFn, correctness_reward
from ccapo_trainer.rollout import Sampling, decode, generate


@dataclass(frozen=True)
class EvalResult:
    accuracy: float
    correct: int
    total: int
    completions: list[str]


def greedy_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],
    *,
    max_new_tokens: int,
    batch_size: int = 32,
    system_prompt: str | None = None,
    reward_fn: RewardFn = correctness_reward,
) -> EvalResult:
    """Share of problems whose greedy completion `reward_fn` scores 1."""
    prompts = [encode_prompt(tokenizer, p, system_prompt) for p in problems]
    sampling = Sampling(max_new_tokens=max_new_tokens, do_sample=False, batch_size=batch_size)
    out = generate(model, tokenizer, prompts, sampling)
    texts = decode(tokenizer, out)
    correct = sum(reward_fn(text, p.answer) >= 1.0 for text, p in zip(texts, problems, strict=True))
    return EvalResult(correct / max(len(problems), 1), correct, len(problems), texts)
