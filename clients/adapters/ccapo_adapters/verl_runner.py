"""verl's task runner with the ccapo trainer modes: `run_ppo(config, task_runner_class=CounterfactualTaskRunner)`.

verl builds the trainer inside a `@ray.remote` TaskRunner, so the "ccapo_*" trainer modes must be
registered in that process. `run_ppo`'s `task_runner_class` ("for recipe to change TaskRunner")
is verl's place for it: this runner imports `ccapo_adapters.verl_trainer` when `run()` starts,
and nothing of ccapo runs when a Ray worker process starts. (A Ray `worker_process_setup_hook`
would import verl, and through it CUDA, in every worker before Ray sets its visible devices.)
"""

from __future__ import annotations

import importlib

import ray
from omegaconf import DictConfig
from verl.trainer.main_ppo import TaskRunnerV1

TRAINERS_MODULE = "ccapo_adapters.verl_trainer"


@ray.remote
class CounterfactualTaskRunner(TaskRunnerV1.__ray_actor_class__):
    """verl's `TaskRunnerV1`, with the ccapo trainer modes registered in its own process first."""

    def run(self, config: DictConfig) -> None:
        importlib.import_module(TRAINERS_MODULE)  # registers the ccapo_* modes with verl
        super().run(config)
