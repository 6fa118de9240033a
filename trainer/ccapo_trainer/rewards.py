"""Rewards: numeric answer correctness checked with math-verify, and an answer-format reward."""

from __future__ import annotations

import logging
from collections.abc import Callable

from math_verify import parse, verify

from ccapo.answer import find_answer

logger = logging.getLogger(__name__)

RewardFn = Callable[[str, str], float]  # (completion, reference answer) -> reward


def final_answer(completion: str) -> str | None:
    """The text after the completion's answer marker (`####`, `\\boxed{`, ...), or None."""
    location = find_answer(completion)
    if location is None:
        return None
    answer = completion[location.start : location.end]
    # math-verify reads "\boxed{...}" itself; for the other markers keep what follows the marker.
    return answer if location.marker == "\\boxed{" else answer[len(location.marker) :].lstrip(" :")


def correctness_reward(completion: str, reference: str) -> float:
    """1.0 when the final answer equals the reference mathematically ("$1,000" == "1000"), else 0.0."""
    answer = final_answer(completion)
    if answer is None:
        return 0.0
    gold, predicted = parse(reference), parse(answer)
    if not gold or not predicted:
        return 0.0
    return 1.0 if verify(gold, predicted) else 0.0


def format_reward(completion: str, reference: str = "") -> float:
    """1.0 when the completion states a final answer after a marker, else 0.0."""
    return 0.0 if final_answer(completion) is None else 1.0


def exact_integer_reward(completion: str, reference: str) -> float:
    """The CPU testbed's exact reward: the text after the last "####" is the reference integer."""
    from ccapo_trainer.testbed.reward import exact_reward

    return exact_reward(completion, reference)


REWARDS: dict[str, RewardFn] = {
    "correctness": correctness_reward,
    "format": format_reward,
    "exact": exact_integer_reward,
}


def register_reward(name: str, fn: RewardFn) -> None:
    REWARDS[name] = fn


def reward_fn(name: str) -> RewardFn:
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}: use one of {', '.join(REWARDS)} or register_reward() your own")
    return REWARDS[name]
