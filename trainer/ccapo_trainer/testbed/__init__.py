"""A CPU testbed: a synthetic arithmetic task with filler lines, a ~1M-parameter Llama, a cached warm start.

The trainer never imports it: pyproject.toml declares its task (`dataset: arith`) and reward
(`rewards: [exact]`) under the `ccapo_trainer.tasks` and `ccapo_trainer.rewards` entry points.
"""

from ccapo_trainer.testbed.model import ModelShape, tiny_model
from ccapo_trainer.testbed.reward import exact_reward
from ccapo_trainer.testbed.task import TaskConfig, arith_problems, arith_task
from ccapo_trainer.testbed.tokenizer import build_tokenizer
from ccapo_trainer.testbed.warmstart import WarmStartConfig, load_warm_start, warm_start

__all__ = [
    "ModelShape",
    "TaskConfig",
    "WarmStartConfig",
    "arith_problems",
    "arith_task",
    "build_tokenizer",
    "exact_reward",
    "load_warm_start",
    "tiny_model",
    "warm_start",
]
