"""The synthetic task: seeded, correct, fillers inert, splits disjoint, calc lines found by ccapo's segmenter."""

from __future__ import annotations

import random

import pytest
from ccapo_trainer.testbed.task import (
    CALC_LINE,
    FILLERS,
    Step,
    TaskConfig,
    apply,
    arith_problems,
    arith_task,
    chain_value,
    parse_chain,
    slipped_solution,
)


def _answer_from_calc_lines(solution: str) -> int:
    """Recompute the answer from the calculation lines alone, checking each one feeds the next."""
    value = None
    for line in solution.splitlines()[:-1]:
        match = CALC_LINE.match(line)
        if match is None:
            assert line in FILLERS
            continue
        left, _, _, result = match.groups()
        assert value is None or int(left) == value, "each calculation starts from the previous result"
        assert not _line_is_wrong(line)
        value = int(result)
    assert value is not None
    return value


def test_generation_is_seeded_and_deterministic():
    assert arith_problems(20, seed=3) == arith_problems(20, seed=3)
    assert arith_problems(20, seed=3) != arith_problems(20, seed=4)


@pytest.mark.parametrize("config", [TaskConfig(), TaskConfig(steps=(1, 6), max_value=50, max_result=500, ops="+-")])
def test_answers_are_correct_and_within_the_knobs(config):
    for problem in arith_problems(200, seed=0, config=config):
        assert problem.solution.endswith(f"#### {problem.answer}")
        assert _answer_from_calc_lines(problem.solution) == int(problem.answer)
        start, steps = parse_chain(problem.solution)
        assert config.steps[0] <= len(steps) <= config.steps[1]
        values = [start]
        for step in steps:
            values.append(apply(values[-1], step))
        assert all(0 <= v <= config.max_result for v in values)
        assert f"has {start} " in problem.question and problem.question.count("Then") == len(steps)


def test_filler_rate_sets_how_many_fillers_there_are_and_they_change_nothing():
    plain = arith_problems(100, seed=0, config=TaskConfig(filler_rate=0.0))
    assert not any(line in FILLERS for p in plain for line in p.solution.splitlines())
    padded = arith_problems(100, seed=0, config=TaskConfig(filler_rate=1.0))
    for problem in padded:
        lines = problem.solution.splitlines()
        assert sum(line in FILLERS for line in lines) == len(parse_chain(problem.solution)[1])
        without_fillers = "\n".join(line for line in lines if line not in FILLERS)
        assert _answer_from_calc_lines(without_fillers) == int(problem.answer)


def test_every_step_matters():
    """Changing any operand changes the answer for + and -: the answer depends on each line."""
    for problem in arith_problems(50, seed=1, config=TaskConfig(ops="+-")):
        start, steps = parse_chain(problem.solution)
        for i in range(len(steps)):
            changed = [Step(s.op, s.operand + 1) if i == j else s for j, s in enumerate(steps)]
            assert chain_value(start, changed) != int(problem.answer)


def test_splits_never_overlap_whatever_the_seeds():
    train = {p.question for p in arith_problems(2000, seed=0, split="train")}
    test = {p.question for p in arith_problems(300, seed=0, split="test")}
    validation = {p.question for p in arith_problems(300, seed=0, split="validation")}
    assert len(train) == 2000 and len(test) == 300
    assert not train & test and not train & validation and not test & validation


def test_slipped_solutions_are_wrong_but_consistent():
    rng = random.Random(0)
    for problem in arith_problems(50, seed=2):
        slipped = slipped_solution(rng, problem, filler_rate=0.5)
        lines = [line for line in slipped.splitlines() if CALC_LINE.match(line)]
        wrong = [line for line in lines if _line_is_wrong(line)]
        assert len(wrong) == 1, slipped
        assert slipped.rsplit("#### ", 1)[1] != problem.answer  # factors are at least 2: a slip never vanishes
        assert parse_chain(slipped)[1] == parse_chain(problem.solution)[1]


def _line_is_wrong(line: str) -> bool:
    left, op, operand, result = CALC_LINE.match(line).groups()
    return apply(int(left), Step(op, int(operand))) != int(result)


def test_task_loader_takes_knobs_by_name():
    problems = arith_task("test", size=5, seed=1, steps=[3, 3], filler_rate=0.0)
    assert len(problems) == 5 and all(len(parse_chain(p.solution)[1]) == 3 for p in problems)


@pytest.mark.parametrize(
    "knobs", [dict(steps=(0, 2)), dict(steps=(3, 2)), dict(max_value=1), dict(filler_rate=1.5), dict(ops="+*")]
)
def test_bad_knobs_say_what_is_wrong(knobs):
    with pytest.raises(ValueError):
        TaskConfig(**knobs)


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="unknown split"):
        arith_problems(1, seed=0, split="dev")
