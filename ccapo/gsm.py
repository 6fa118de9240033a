"""Offline GSM8K-style problems (reasoning-gym's `gsm_symbolic`) and labeled filler insertion.

`insert_fillers` plants neutral sentences among a gold solution's lines and labels every reasoning
line as a calculation, a filler or other text: a ground truth for checking that a scorer ranks
the calculations the answer depends on above sentences it cannot depend on.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

from ccapo.trace import ChatMessage, Trace

SYSTEM_PROMPT = "You are a careful math tutor. Solve step by step and provide the final numeric answer."

FILLERS: tuple[str, ...] = (
    "Let me think about this step by step.",
    "Let me double-check the numbers so far.",
    "I will organize the work carefully.",
    "Let me make sure I read the question correctly.",
    "I will keep track of each quantity as I go.",
    "Let me write this out clearly.",
    "I will take this one piece at a time.",
    "Let me stay careful with the details here.",
)

# A number as gold solutions write it: optional currency sign, thousands commas, decimals, percent.
_NUMBER = r"[$£€]?\d[\d,]*(?:\.\d+)?%?"
# A standalone "x" is a multiplication sign; inside a word ("six", "box") it is not.
_OPERATOR = r"(?:[+\-×*/÷]|(?<![A-Za-z])x(?![A-Za-z]))"
# Units may sit between the numbers ("£195/day * 12 days/month = £2340/month"), so the parts of
# the calculation are matched loosely, but never across the "=".
_CALCULATION = re.compile(rf"{_NUMBER}[^=\n]*?{_OPERATOR}[^=\n]*?{_NUMBER}[^=\n]*?=\s*-?{_NUMBER}")

LineLabel = Literal["calc", "filler", "other"]


@dataclass(frozen=True)
class GsmProblem:
    question: str
    solution: str  # a worked solution whose last line is "#### N"
    answer: str


@dataclass(frozen=True)
class LabeledLine:
    """One reasoning line: [start, end) characters of the solution, trailing newline included."""

    start: int
    end: int
    label: LineLabel


def math_prompt(question: str) -> list[ChatMessage]:
    """The paper's chat prompt: its system prompt, then the question with the answer format."""
    user = f'{question}\nGive the final numeric answer on its own line after "####".'
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def gsm_symbolic_problems(n: int, seed: int = 0) -> list[GsmProblem]:
    """`n` seeded GSM8K-style problems with gold solutions, generated offline."""
    import reasoning_gym  # heavy import, only needed when problems are generated

    dataset = reasoning_gym.create_dataset("gsm_symbolic", size=n, seed=seed)
    return [
        GsmProblem(question=entry["question"], solution=entry["metadata"]["answer_cot"], answer=str(entry["answer"]))
        for entry in dataset
    ]


def gsm_traces(n: int, seed: int = 0) -> list[Trace]:
    """Gold solutions as traces to score, with the reference answer attached."""
    return [
        Trace(prompt=math_prompt(p.question), completion=p.solution, reference_answer=p.answer)
        for p in gsm_symbolic_problems(n, seed)
    ]


def is_calculation(line: str) -> bool:
    """Whether the line works out an arithmetic result (`number op number ... = number`)."""
    return _CALCULATION.search(line) is not None


def insert_fillers(solution: str, n_fillers: int, rng: random.Random) -> tuple[str, list[LabeledLine]]:
    """Insert `n_fillers` distinct filler lines among the reasoning lines; label every reasoning line.

    Fillers go at random line boundaries before the "####" line (several may share a boundary).
    The labels cover each non-blank line before "####", in order, from its first non-space
    character through its newline.
    """
    if not 0 <= n_fillers <= len(FILLERS):
        raise ValueError(f"n_fillers must be between 0 and {len(FILLERS)}, got {n_fillers}")
    lines = solution.splitlines(keepends=True)
    answer_at = next((i for i, line in enumerate(lines) if line.lstrip().startswith("####")), None)
    if answer_at is None:
        raise ValueError('the solution has no "####" answer line to keep the fillers in front of')
    reasoning, tail = lines[:answer_at], lines[answer_at:]

    # Insert from the last slot backwards so earlier slots keep their meaning.
    slots = sorted((rng.randint(0, len(reasoning)) for _ in range(n_fillers)), reverse=True)
    marked: list[tuple[str, bool]] = [(line, False) for line in reasoning]
    for slot, filler in zip(slots, rng.sample(FILLERS, n_fillers), strict=True):
        marked.insert(slot, (filler + "\n", True))

    labels: list[LabeledLine] = []
    offset = 0
    for line, is_filler in marked:
        if line.strip():
            label: LineLabel = "filler" if is_filler else "calc" if is_calculation(line) else "other"
            # Start at the first visible character: tokenizers merge a newline with the next line's
            # indentation, and that token belongs to the line the newline ends.
            indent = len(line) - len(line.lstrip())
            labels.append(LabeledLine(offset + indent, offset + len(line), label))
        offset += len(line)
    return "".join(line for line, _ in marked) + "".join(tail), labels
