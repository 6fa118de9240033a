from __future__ import annotations

import pytest
import torch
from ccapo_trainer.advantages import group_advantages, zero_variance_groups
from ccapo_trainer.rewards import correctness_reward, final_answer, format_reward


def test_group_advantages():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    grpo = group_advantages(rewards, 2)
    assert grpo[:2].tolist() == pytest.approx([0.7070, -0.7070], abs=1e-3)  # std of (1, 0) is 0.7071
    assert grpo[4:].tolist() == [0.0, 0.0]
    assert group_advantages(rewards, 2, "none").tolist() == [0.5, -0.5, -0.5, 0.5, 0.0, 0.0]
    assert zero_variance_groups(rewards, 2).tolist() == [False, False, True]
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(rewards, 4)


@pytest.mark.parametrize(
    ("completion", "reference", "reward"),
    [
        ("So it costs 1000 dollars.\n#### $1,000", "1000", 1.0),
        ("Down three.\n#### -3", "-3", 1.0),
        ("Each is 2.50.\n#### 2.50", "2.5", 1.0),
        ("She has 12 apples.\n#### 12 apples", "12", 1.0),
        ("Therefore \\boxed{\\frac{1}{2}}", "0.5", 1.0),
        ("The answer is 13", "12", 0.0),
        ("I could not finish; maybe 12.", "12", 0.0),  # no answer marker
    ],
)
def test_correctness_on_awkward_answers(completion, reference, reward):
    assert correctness_reward(completion, reference) == reward


def test_format_reward():
    assert format_reward("x = 1\n#### 1") == 1.0
    assert format_reward("x = 1") == 0.0
    assert final_answer("so #### 12 apples") == "12 apples"
