"""Training data: math word problems with a reference answer, from GSM8K, local files or reasoning-gym.

Every source yields `Problem`s; `prompt_messages` turns one into the chat the policy sees: the
paper's system prompt, then the question and a request for the final answer after "####".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from datasets import load_dataset

from ccapo.gsm import SYSTEM_PROMPT, gsm_symbolic_problems, math_prompt

GSM8K = "openai/gsm8k"


@dataclass(frozen=True)
class Problem:
    question: str
    answer: str  # the reference final answer, e.g. "72"
    solution: str | None = None  # a worked solution ending in "#### N", where the source has one


def prompt_messages(problem: Problem, system_prompt: str = SYSTEM_PROMPT) -> list[dict[str, str]]:
    messages = math_prompt(problem.question)
    messages[0]["content"] = system_prompt
    return messages


def gsm8k_answer(solution: str) -> str:
    """GSM8K's reference answer: what follows the last "####", without thousands separators."""
    if "####" not in solution:
        raise ValueError(f"a GSM8K solution ends in '#### <answer>'; this one does not: {solution[-80:]!r}")
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


def load_gsm8k(split: str = "train", data_files: str | Sequence[str] | None = None) -> list[Problem]:
    """GSM8K through `datasets` ("openai/gsm8k", config "main"), or local files of its schema.

    `data_files` (JSON lines or Parquet with `question` and `answer` columns, the answer a worked
    solution ending in "#### N") replaces the hub download: offline machines and tests use it.
    """
    if data_files is None:
        rows = load_dataset(GSM8K, "main", split=split)
    else:
        files = [data_files] if isinstance(data_files, str) else list(data_files)
        rows = load_dataset(_file_format(files[0]), data_files={split: files}, split=split)
    return [Problem(row["question"], gsm8k_answer(row["answer"]), row["answer"]) for row in rows]


def load_local(path: str | Path, question_field: str = "question", answer_field: str = "answer") -> list[Problem]:
    """Problems from a JSON-lines or Parquet file; answers ending in "#### N" are reduced to N."""
    rows = load_dataset(_file_format(str(path)), data_files=str(path), split="train")
    missing = {question_field, answer_field} - set(rows.column_names)
    if missing:
        raise ValueError(f"{path} has no column(s) {sorted(missing)}; it has {rows.column_names}")
    problems = []
    for row in rows:
        answer = str(row[answer_field])
        solution = answer if "####" in answer else None
        problems.append(Problem(row[question_field], gsm8k_answer(answer) if solution else answer.strip(), solution))
    return problems


def load_gsm_symbolic(n: int, seed: int = 0) -> list[Problem]:
    """Offline GSM8K-style problems from reasoning-gym, for demos and tests."""
    return [Problem(p.question, p.answer, p.solution) for p in gsm_symbolic_problems(n, seed)]


def _file_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix in (".jsonl", ".json"):
        return "json"
    raise ValueError(f"cannot read {path}: give a .jsonl, .json or .parquet file")
