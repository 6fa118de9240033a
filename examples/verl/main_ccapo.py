"""verl's `main_ppo` with counterfactual token weights: `python examples/verl/main_ccapo.py [overrides]`.

The same entry point as `python -m verl.trainer.main_ppo`, with config/ccapo_grpo_gsm8k.yaml
(verl's ppo_trainer.yaml plus a `counterfactual` section), verl's own config checks, and verl's task
runner replaced by `CounterfactualTaskRunner`, which registers the "ccapo_*" trainer modes in
its own process. Recipe: docs/integrations.md, "verl".
"""

from __future__ import annotations

import hydra
from ccapo_adapters.verl_runner import CounterfactualTaskRunner
from omegaconf import DictConfig
from verl.trainer.main_ppo import run_ppo
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import validate_config
from verl.utils.device import auto_set_device


def checked(config: DictConfig) -> DictConfig:
    """`config` after verl's own checks (what `main_ppo` runs first) and ccapo's trainer mode."""
    auto_set_device(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    if not config.trainer.use_v1 or not config.trainer.v1.trainer_mode.startswith("ccapo_"):
        raise ValueError("set trainer.use_v1=true and trainer.v1.trainer_mode to ccapo_sync (or ccapo_*_async)")
    return config


@hydra.main(config_path="config", config_name="ccapo_grpo_gsm8k", version_base=None)
def main(config: DictConfig) -> None:
    run_ppo(checked(config), task_runner_class=CounterfactualTaskRunner)


if __name__ == "__main__":
    main()
