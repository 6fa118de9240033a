"""The evaluation stage: greedy accuracy on held-out problems, split across the processes."""

from __future__ import annotations

from collections.abc import Sequence

from ccapo_trainer.components import Components
from ccapo_trainer.data import Problem
from ccapo_trainer.evaluate import greedy_accuracy


def evaluate(run: Components, problems: Sequence[Problem]) -> dict[str, float]:
    """Each process answers every `count`-th problem, from its rank on; graded by the first reward function."""
    mine = list(problems)[run.processes.rank :: run.processes.count]
    correct = 0
    if mine:
        result = greedy_accuracy(
            run.policy,
            run.tokenizer,
            mine,
            max_new_tokens=run.config.max_completion_length,
            batch_size=run.config.eval_batch_size,
            system_prompt=run.config.system_prompt,
            reward_fn=run.rewards.fns[0],
        )
        correct = result.correct
    total, right = run.processes.values([len(mine), correct]).sum(0).tolist()
    return {"eval/accuracy": right / max(total, 1), "eval/problems": int(total)}
