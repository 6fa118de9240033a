"""Training data: math word problems with a reference answer, from GSM8K, local files or reasoning-gym.

Every source yields `Problem`s; `prompt_messages` turns one into the chat the policy sees: the
paper's system prompt, then the question and a request for the final answer after "####".
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

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


def encode_prompt(tokenizer: PreTrainedTokenizerBase, problem: Problem, system_prompt: str | None = None) -> list[int]:
    """The prompt's token ids through the model's chat template (plain lines where it has none)."""
    messages = prompt_messages(problem, system_prompt or SYSTEM_PROMPT)
    if tokenizer.chat_template is None:
        return tokenizer("\n".join(m["content"] for m in messages) + "\n").input_ids
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False).input_ids


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
    from datasets import load_dataset  # only the file and hub loaders need it

    if data_files is None:
        rows = load_dataset(GSM8K, "main", split=split)
    else:
        files = [data_files] if isinstance(data_files, str) else list(data_files)
        rows = load_dataset(_file_format(files[0]), data_files={split: files}, split=split)
    return [Problem(row["question"], gsm8k_answer(row["answer"]), row["answer"]) for row in rows]


def load_local(path: str | Path, question_field: str = "question", answer_field: str = "answer") -> list[Problem]:
    """Problems from a JSON-lines or Parquet file; answers ending in "#### N" are reduced to N."""
    from datasets import load_dataset

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


# A task loader: (split, **dataset_kwargs) -> problems. Installed packages declare theirs under the
# TASK_ENTRY_POINTS group (the testbed's `arith` is one); code registers its own with register_task.
TaskLoader = Callable[..., list[Problem]]
TASK_ENTRY_POINTS = "ccapo_trainer.tasks"
TASKS: dict[str, TaskLoader] = {}

# gsm_symbolic has no splits: each split is its own seeded draw, far apart so they never overlap.
_SYMBOLIC_SPLIT_SEEDS = {"train": 0, "test": 1_000_003, "validation": 2_000_003}


def register_task(name: str, loader: TaskLoader) -> None:
    TASKS[name] = loader


def load_problems(name: str, split: str, **kwargs: Any) -> list[Problem]:
    """Problems by name: "gsm8k", "gsm_symbolic", a task (registered, else installed), or a .jsonl/.json/.parquet path.

    `kwargs` go to the loader: `data_files` for gsm8k, `size` and `seed` for gsm_symbolic, the field
    names for local files, the task's own knobs for a registered task.
    """
    if name == "gsm8k":
        return load_gsm8k(split, **kwargs)
    if name == "gsm_symbolic":
        split_seed = _SYMBOLIC_SPLIT_SEEDS.get(split, zlib.crc32(split.encode()))
        return load_gsm_symbolic(int(kwargs.get("size", 2000)), seed=int(kwargs.get("seed", 0)) + split_seed)
    installed = {entry.name: entry for entry in metadata.entry_points(group=TASK_ENTRY_POINTS)}
    if name in TASKS:
        return TASKS[name](split=split, **kwargs)
    if name in installed:  # loaded only when asked for: a task pack's imports cost nothing otherwise
        return installed[name].load()(split=split, **kwargs)
    if Path(name).suffix.lower() in (".jsonl", ".json", ".parquet"):
        return load_local(name, **kwargs)
    known = ", ".join(dict.fromkeys(["gsm8k", "gsm_symbolic", *installed, *TASKS]))
    raise ValueError(f"unknown dataset {name!r}: use one of {known}, or a .jsonl/.json/.parquet file")


def _file_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix in (".jsonl", ".json"):
        return "json"
    raise ValueError(f"cannot read {path}: give a .jsonl, .json or .parquet file")
