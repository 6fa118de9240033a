"""GSM8K reward for OpenRLHF (`--reward.remote_url gsm8k_reward.py`): 1 when the final number matches the label's.

GSM8K labels end with "#### <answer>"; the completion's answer is the number after its last "####"
(or, failing that, its last number).
"""

from __future__ import annotations

import re

import torch

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> str | None:
    tail = text.rsplit("####", 1)[-1] if "####" in text else text
    numbers = NUMBER.findall(tail)
    return numbers[-1 if "####" not in text else 0].replace(",", "") if numbers else None


def reward_func(queries: list[str], prompts: list[str], labels: list[str]) -> dict:
    answers = [final_number(query[len(prompt) :]) for query, prompt in zip(queries, prompts, strict=True)]
    correct = [answer == final_number(label) for answer, label in zip(answers, labels, strict=True)]
    rewards = torch.tensor(correct, dtype=torch.float32)
    return {"rewards": rewards, "scores": rewards, "extra_logs": {}}
