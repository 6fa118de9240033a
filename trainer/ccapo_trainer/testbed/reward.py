"""The task's exact reward: the integer after the last "####" must equal the reference."""

from __future__ import annotations

import re

# What may close a completion after its answer: whitespace and special-token strings ("<|eos|>").
_ANSWER = re.compile(r"\s*([-+]?\d+)(?:\s|<\|[^|]*\|>)*")


def exact_reward(completion: str, reference: str) -> float:
    """1.0 if the text after the completion's last "####" is exactly the reference integer, else 0.0.

    Only whitespace and special-token strings may surround the number: "#### 42 apples" and
    "#### 42.0" earn nothing. A reference that is not an integer raises ValueError.
    """
    gold = int(reference.strip())
    if "####" not in completion:
        return 0.0
    match = _ANSWER.fullmatch(completion.rsplit("####", 1)[1])
    return 1.0 if match is not None and int(match.group(1)) == gold else 0.0
