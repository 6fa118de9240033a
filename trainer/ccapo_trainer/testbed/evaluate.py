"""Greedy evaluation of any HF causal LM whose tokenizer has a chat template."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ccapo.gsm import SYSTEM_PROMPT
from ccapo_trainer.data import Problem, prompt_messages
from ccapo_trainer.rewards import RewardFn
from ccapo_trainer.testbed.reward import exact_reward


@torch.no_grad()
def greedy_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],
    max_new_tokens: int,
    batch_size: int = 64,
    system_prompt: str = SYSTEM_PROMPT,
) -> list[str]:
    """Each problem's greedy completion, special tokens removed, batched with left padding."""
    was_training = model.training
    model.eval()
    completions: list[str] = []
    try:
        for first in range(0, len(problems), batch_size):
            chats = [prompt_messages(p, system_prompt) for p in problems[first : first + batch_size]]
            texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
            batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
            batch = batch.to(model.device)
            output = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            completions += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    finally:
        model.train(was_training)
    return completions


def greedy_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],
    max_new_tokens: int,
    batch_size: int = 64,
    reward: RewardFn = exact_reward,
    system_prompt: str = SYSTEM_PROMPT,
) -> float:
    """The mean reward of greedy completions (with exact_reward: the share answered correctly)."""
    if not problems:
        raise ValueError("greedy_accuracy needs at least one problem")
    completions = greedy_completions(model, tokenizer, problems, max_new_tokens, batch_size, system_prompt)
    return sum(reward(c, p.answer) for c, p in zip(completions, problems, strict=True)) / len(problems)
