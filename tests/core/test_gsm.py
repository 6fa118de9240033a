import random

import pytest

from ccapo.gsm import (
    FILLERS,
    SYSTEM_PROMPT,
    GsmProblem,
    gsm_symbolic_problems,
    gsm_traces,
    insert_fillers,
    is_calculation,
    math_prompt,
)

SOLUTION = (
    "Robert dropped his pebbles and was left with 72*0.5=36 pebbles.\n"
    "He searched and found some of his lost pebbles.\n"
    "That got him back to 36 + 17 = 53 pebbles.\n"
    "He removed the coins, leaving him with 53 - 9 = 44 pebbles.\n"
    "#### 44"
)


def test_problems_load_with_gold_solutions() -> None:
    problems = gsm_symbolic_problems(4, seed=0)
    assert len(problems) == 4
    assert all(isinstance(p, GsmProblem) for p in problems)
    for p in problems:
        assert p.question and p.answer
        assert p.solution.splitlines()[-1] == f"#### {p.answer}"
    assert gsm_symbolic_problems(4, seed=0) == problems


def test_traces_use_the_paper_prompt() -> None:
    (trace,) = gsm_traces(1, seed=3)
    assert trace.prompt[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert trace.prompt[1]["role"] == "user" and "####" in trace.prompt[1]["content"]
    assert trace.completion.endswith(f"#### {trace.reference_answer}")


def test_math_prompt_asks_for_the_answer_marker() -> None:
    system, user = math_prompt("What is 2 + 2?")
    assert system["content"] == SYSTEM_PROMPT
    assert user["content"].startswith("What is 2 + 2?\n") and "####" in user["content"]


def test_labels_on_a_known_solution_without_fillers() -> None:
    text, labels = insert_fillers(SOLUTION, 0, random.Random(0))
    assert text == SOLUTION
    assert [label.label for label in labels] == ["calc", "other", "calc", "calc"]
    assert [text[label.start : label.end] for label in labels] == SOLUTION.splitlines(keepends=True)[:4]


@pytest.mark.parametrize("seed", range(10))
def test_fillers_are_lines_before_the_answer(seed: int) -> None:
    text, labels = insert_fillers(SOLUTION, 3, random.Random(seed))
    lines = text.splitlines(keepends=True)
    assert lines[-1] == "#### 44"
    fillers = [line.strip() for line in lines if line.strip() in FILLERS]
    assert len(fillers) == len(set(fillers)) == 3
    # The original lines survive in order once the fillers are taken out.
    assert "".join(line for line in lines if line.strip() not in FILLERS) == SOLUTION
    assert len(labels) == 4 + 3
    for label in labels:
        line = text[label.start : label.end]
        assert line.endswith("\n") and line.count("\n") == 1
        expected = "filler" if line.strip() in FILLERS else "calc" if "=" in line else "other"
        assert label.label == expected


def test_blank_lines_are_not_labeled() -> None:
    text, labels = insert_fillers("Step one: 2 + 3 = 5.\n\nSo 5 x 2 = 10.\n#### 10\n", 0, random.Random(0))
    assert [(text[label.start : label.end], label.label) for label in labels] == [
        ("Step one: 2 + 3 = 5.\n", "calc"),
        ("So 5 x 2 = 10.\n", "calc"),
    ]


@pytest.mark.parametrize(
    ("line", "calc"),
    [
        ("12 × 4 = 48", True),
        ("If he earns £195/day * 12 days/month = £2340/month", True),
        ("The fee is $400,000 x 8/100 = $32,000.", True),
        ("9 skeins per shawl + 4 skeins per hat = 13 skeins.", True),
        ("120 ÷ 4 = 30", True),
        ("Let x be the amount of fence Sam gets.", False),
        ("The first 6 complexes have 1800 apartments", False),
        ("Jennifer = 464 points", False),
        ("Let me double-check the numbers so far.", False),
    ],
)
def test_calculation_lines(line: str, calc: bool) -> None:
    assert is_calculation(line) is calc


def test_too_many_fillers_or_no_answer_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="n_fillers"):
        insert_fillers(SOLUTION, len(FILLERS) + 1, random.Random(0))
    with pytest.raises(ValueError, match="####"):
        insert_fillers("2 + 2 = 4", 1, random.Random(0))
