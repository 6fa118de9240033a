"""exact_reward: only the exact integer after the last "####" earns the reward."""

from __future__ import annotations

import pytest
from ccapo_trainer.testbed.reward import exact_reward


@pytest.mark.parametrize(
    ("completion", "reward"),
    [
        ("5 + 7 = 12\n#### 12", 1.0),
        ("#### 12", 1.0),
        ("5 + 7 = 12\n####12", 1.0),
        ("5 + 7 = 12\n#### 12\n", 1.0),
        ("5 + 7 = 12\n#### 12<|eos|>", 1.0),
        ("#### 012", 1.0),
        ("#### +12", 1.0),
        ("#### 11\n#### 12", 1.0),  # the last marker counts
        ("#### 12\n#### 11", 0.0),
        ("5 + 7 = 12", 0.0),  # no marker
        ("#### ", 0.0),
        ("#### 13", 0.0),
        ("#### -12", 0.0),
        ("#### 12 apples", 0.0),
        ("#### 12.0", 0.0),
        ("#### 1 2", 0.0),
        ("#### 12\nlet me check that.", 0.0),
        ("#### 120", 0.0),
    ],
)
def test_exact_reward(completion, reward):
    assert exact_reward(completion, "12") == reward


def test_negative_and_padded_references():
    assert exact_reward("#### -3", "-3") == 1.0
    assert exact_reward("#### 3", " 3\n") == 1.0


def test_a_non_integer_reference_is_an_error():
    with pytest.raises(ValueError):
        exact_reward("#### 3", "3.5")
