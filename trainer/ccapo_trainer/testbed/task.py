"""The synthetic task: multi-step arithmetic word problems with filler lines in their solutions.

A problem tracks one quantity through a chain of operations ("Mia has 7 pears. She buys 5 more.
She gives away 3. ..."); each calculation line of the gold solution starts from the previous
line's result, so the final answer depends on every calculation. Filler lines ("let me check
that.") sit between them and change nothing: the ground truth a credit-assignment method should
find. Everything is seeded and offline.
"""

from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass
from typing import Any

from ccapo.gsm import SYSTEM_PROMPT, math_prompt
from ccapo_trainer.data import Problem

NAMES = ("Mia", "Tom", "Ana", "Leo", "Eva", "Sam", "Ivy", "Max")
ITEMS = ("apples", "pears", "coins", "cards", "books", "shells", "stamps", "marbles")
# Each operation's phrasings; {n} is the operand.
PHRASES = {
    "+": ("Then they find {n} more.", "Then they buy {n} more.", "Then they get {n} more."),
    "-": ("Then they give away {n}.", "Then they lose {n}.", "Then they sell {n}."),
    "*": ("Then the number grows {n} times.", "Then they get {n} times as many."),
}
FILLERS = (
    "let me check that.",
    "ok, next step.",
    "that looks right.",
    "now the next part.",
    "so far so good.",
    "keep going with it.",
)
SPLITS = ("train", "test", "validation")
# A calculation line as render_solution writes it: "value op operand = result".
CALC_LINE = re.compile(r"^(-?\d+) ([-+*]) (\d+) = (-?\d+)$")


@dataclass(frozen=True)
class TaskConfig:
    """Difficulty knobs. Operands of + and - lie in [1, max_value], factors of * in [2, max_factor];
    the start value lies in [2, max_value] and every intermediate result in [0, max_result]."""

    steps: tuple[int, int] = (2, 4)  # calculation lines per problem, inclusive range
    max_value: int = 20
    max_factor: int = 3
    max_result: int = 99
    filler_rate: float = 0.5  # chance of a filler line after each calculation line
    ops: str = "+-*"

    def __post_init__(self) -> None:
        if not 1 <= self.steps[0] <= self.steps[1]:
            raise ValueError(f"steps {self.steps} must be (low, high) with 1 <= low <= high")
        if not 2 <= self.max_value <= self.max_result:
            raise ValueError(f"need 2 <= max_value ({self.max_value}) <= max_result ({self.max_result})")
        if not 0.0 <= self.filler_rate <= 1.0:
            raise ValueError(f"filler_rate {self.filler_rate} must lie in [0, 1]")
        # "-" fits any positive value and "+" fits 0: with both, every chain reaches its length.
        if not {"+", "-"} <= set(self.ops) <= set(PHRASES):
            raise ValueError(f"ops {self.ops!r} must contain '+' and '-', and may add '*'")


@dataclass(frozen=True)
class Step:
    op: str
    operand: int


def arith_problems(n: int, seed: int, config: TaskConfig | None = None, *, split: str = "train") -> list[Problem]:
    """`n` distinct seeded problems of one split, each with its gold solution ending in "#### N".

    Splits partition the question space by a hash of the question text, so two splits never share
    a problem whatever their seeds; within a split, the seed picks the draw.
    """
    config = config or TaskConfig()
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {SPLITS}")
    rng = random.Random(f"{seed}:{split}")
    problems: list[Problem] = []
    seen: set[str] = set()
    while len(problems) < n:
        start, steps = _draw_chain(rng, config)
        question = render_question(rng, start, steps)
        if question in seen or _split_of(question) != split:
            continue
        seen.add(question)
        solution = render_solution(rng, start, steps, config.filler_rate)
        problems.append(Problem(question, str(chain_value(start, steps)), solution))
    return problems


def arith_task(split: str, size: int = 2000, seed: int = 0, **knobs: Any) -> list[Problem]:
    """A task loader by split name: `size` problems, TaskConfig fields as keyword arguments."""
    if "steps" in knobs:
        knobs["steps"] = tuple(knobs["steps"])  # from JSON or YAML configs it arrives as a list
    return arith_problems(size, seed, TaskConfig(**knobs), split=split)


def render_question(rng: random.Random, start: int, steps: list[Step]) -> str:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    body = " ".join(rng.choice(PHRASES[s.op]).format(n=s.operand) for s in steps)
    return f"{name} has {start} {item}. {body} How many {item} does {name} have now?"


def render_solution(rng: random.Random, start: int, steps: list[Step], filler_rate: float, *, slip: int = -1) -> str:
    """Calculation lines, each fed by the previous result, with fillers between, then "#### N".

    `slip` >= 0 writes a wrong result on that calculation line and carries it on, as a student's
    arithmetic slip would: the warm start's noisy solutions.
    """
    lines = []
    value = start
    for i, step in enumerate(steps):
        result = apply(value, step)
        if i == slip:
            result = _slipped(rng, result)
        lines.append(f"{value} {step.op} {step.operand} = {result}")
        if rng.random() < filler_rate:
            lines.append(rng.choice(FILLERS))
        value = result
    lines.append(f"#### {value}")
    return "\n".join(lines)


def slipped_solution(rng: random.Random, problem: Problem, filler_rate: float) -> str:
    """The problem's solution with one arithmetic slip on a random calculation line, carried on."""
    start, steps = parse_chain(problem.solution or "")
    return render_solution(rng, start, steps, filler_rate, slip=rng.randrange(len(steps)))


def parse_chain(solution: str) -> tuple[int, list[Step]]:
    """The start value and steps of a solution's calculation lines (fillers skipped)."""
    calcs = [m for m in map(CALC_LINE.match, solution.splitlines()) if m]
    if not calcs:
        raise ValueError(f"no calculation lines like '5 + 7 = 12' in {solution!r}")
    return int(calcs[0].group(1)), [Step(m.group(2), int(m.group(3))) for m in calcs]


def chain_value(start: int, steps: list[Step]) -> int:
    """The final value of a chain: the problem's answer."""
    value = start
    for step in steps:
        value = apply(value, step)
    return value


def apply(value: int, step: Step) -> int:
    if step.op == "+":
        return value + step.operand
    if step.op == "-":
        return value - step.operand
    return value * step.operand


def corpus() -> list[str]:
    """Every word and symbol the task and its prompt can produce, for building a tokenizer."""
    texts = [*NAMES, " ".join(NAMES + ITEMS), *(p for group in PHRASES.values() for p in group), *FILLERS]
    texts += [" ".join(f"{d} {op} {d} = {d}" for op in PHRASES) for d in range(10)]
    texts += [render_question(random.Random(0), 5, [Step("+", 3)]), "#### 8"]
    texts += [m["content"] for m in math_prompt("")] + [SYSTEM_PROMPT]
    return texts


def _draw_chain(rng: random.Random, config: TaskConfig) -> tuple[int, list[Step]]:
    start = value = rng.randint(2, config.max_value)
    steps = []
    for _ in range(rng.randint(*config.steps)):
        options = [s for s in (_draw_step(rng, op, value, config) for op in config.ops) if s is not None]
        steps.append(rng.choice(options))
        value = apply(value, steps[-1])
    return start, steps


def _draw_step(rng: random.Random, op: str, value: int, config: TaskConfig) -> Step | None:
    if op == "+":
        room = min(config.max_value, config.max_result - value)
        return Step("+", rng.randint(1, room)) if room >= 1 else None
    if op == "-":
        return Step("-", rng.randint(1, min(config.max_value, value))) if value >= 1 else None
    top = min(config.max_factor, config.max_result // value) if value else 0
    return Step("*", rng.randint(2, top)) if top >= 2 else None


def _slipped(rng: random.Random, result: int) -> int:
    """A nearby wrong result, never negative."""
    wrong = result + rng.choice((-1, 1)) * rng.randint(1, 3)
    return wrong if wrong >= 0 and wrong != result else result + rng.randint(1, 3)


def _split_of(question: str) -> str:
    bucket = zlib.crc32(question.encode()) % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"
