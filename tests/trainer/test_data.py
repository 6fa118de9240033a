"""Data loaders on small local files of the real schemas (no hub access)."""

from __future__ import annotations

import json

import pytest
from ccapo_trainer.data import Problem, gsm8k_answer, load_gsm8k, load_gsm_symbolic, load_local, prompt_messages

from ccapo.gsm import SYSTEM_PROMPT

GSM8K_ROWS = [
    {
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
        "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
    },
    {"question": "A farm sells 1,200 eggs a week. How many in 10 weeks?", "answer": "1,200 * 10 = 12,000\n#### 12,000"},
]


@pytest.fixture
def gsm8k_file(tmp_path):
    path = tmp_path / "gsm8k_test.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in GSM8K_ROWS))
    return path


def test_gsm8k_loader_on_a_local_file_of_its_schema(gsm8k_file):
    problems = load_gsm8k("test", data_files=str(gsm8k_file))
    assert [p.answer for p in problems] == ["72", "12000"]
    assert problems[0].solution.endswith("#### 72")


def test_parquet_and_custom_columns(tmp_path):
    import pandas as pd

    path = tmp_path / "mine.parquet"
    pd.DataFrame({"problem": ["2 + 2?", "3 * 3?"], "final": ["4", "#### 9"]}).to_parquet(path)
    problems = load_local(path, question_field="problem", answer_field="final")
    assert problems == [Problem("2 + 2?", "4"), Problem("3 * 3?", "9", "#### 9")]
    with pytest.raises(ValueError, match="no column"):
        load_local(path)


def test_gsm_symbolic_and_prompts():
    (problem,) = load_gsm_symbolic(1, seed=3)
    assert problem.solution.rstrip().endswith(f"#### {problem.answer}")
    messages = prompt_messages(problem)
    assert messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert problem.question in messages[1]["content"] and "####" in messages[1]["content"]


def test_bad_inputs_say_what_to_fix(tmp_path):
    with pytest.raises(ValueError, match="#### <answer>"):
        gsm8k_answer("no marker")
    with pytest.raises(ValueError, match=r"\.jsonl"):
        load_local(tmp_path / "data.csv")


def test_registered_tasks_and_rewards_are_found_by_name(monkeypatch):
    from ccapo_trainer import data, rewards
    from ccapo_trainer.data import load_problems, register_task
    from ccapo_trainer.rewards import register_reward, reward_fn

    monkeypatch.setattr(data, "TASKS", dict(data.TASKS))  # the registries are process-wide
    monkeypatch.setattr(rewards, "REWARDS", dict(rewards.REWARDS))

    register_task("two", lambda split, size=2: [Problem(f"{split} {i}", str(i)) for i in range(size)])
    assert [p.question for p in load_problems("two", "test", size=3)] == ["test 0", "test 1", "test 2"]
    register_reward("length", lambda completion, answer: float(len(completion)))
    assert reward_fn("length")("abc", "") == 3.0
    with pytest.raises(ValueError, match="register_reward"):
        reward_fn("no-such-reward")
    with pytest.raises(ValueError, match="gsm8k, gsm_symbolic, arith, two"):
        load_problems("no-such-task", "train")


def test_installed_tasks_and_rewards_are_found_by_entry_point():
    # The testbed declares `arith` and `exact` in pyproject.toml; the trainer never imports it.
    from ccapo_trainer.data import load_problems
    from ccapo_trainer.rewards import reward_fn
    from ccapo_trainer.testbed.reward import exact_reward
    from ccapo_trainer.testbed.task import arith_task

    assert load_problems("arith", "test", size=3, seed=1) == arith_task("test", size=3, seed=1)
    assert reward_fn("exact") is exact_reward
    with pytest.raises(ValueError, match="correctness, format, exact"):
        reward_fn("no-such-reward")
