"""Rewards: numeric answer correctness checked with math-verify, and an answer-format reward."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata

from math_verify import parse, verify

from ccapo.answer import find_answer
from ccapo_trainer.data import Problem

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


# Installed packages declare their rewards under this entry-point group (the testbed's `exact` is one);
# code registers its own with register_reward.
REWARD_ENTRY_POINTS = "ccapo_trainer.rewards"
REWARDS: dict[str, RewardFn] = {"correctness": correctness_reward, "format": format_reward}


def register_reward(name: str, fn: RewardFn) -> None:
    REWARDS[name] = fn


def reward_fn(name: str) -> RewardFn:
    """A reward by name: registered with register_reward, else installed under REWARD_ENTRY_POINTS."""
    if name in REWARDS:
        return REWARDS[name]
    installed = {entry.name: entry for entry in metadata.entry_points(group=REWARD_ENTRY_POINTS)}
    if name in installed:
        return installed[name].load()
    known = ", ".join(dict.fromkeys([*REWARDS, *installed]))
    raise ValueError(f"unknown reward {name!r}: use one of {known} or register_reward() your own")


@dataclass(frozen=True)
class WeightedRewards:
    """A run's reward: the weighted sum of its reward functions. `fns[0]` is the task's correctness:
    its full marks make a sample correct (and it grades evaluation)."""

    fns: list[RewardFn]
    weights: list[float]

    def __call__(self, texts: Sequence[str], problems: Sequence[Problem]) -> tuple[list[float], list[bool], int]:
        """Per sample: the weighted sum, whether the first function gave full marks, and the number
        of reward calls that raised (each scores 0: one bad sample must not stop the run)."""
        totals, correct, failures = [], [], 0
        for text, problem in zip(texts, problems, strict=True):
            values = []
            for fn in self.fns:
                try:
                    values.append(float(fn(text, problem.answer)))
                except Exception as err:
                    failures += 1
                    values.append(0.0)
                    name = getattr(fn, "__name__", "function")
                    logger.warning("reward %s failed on a sample (%s: %s); it scores 0", name, type(err).__name__, err)
            totals.append(sum(w * v for w, v in zip(self.weights, values, strict=True)))
            correct.append(values[0] >= 1.0)
        return totals, correct, failures
