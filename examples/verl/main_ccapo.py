"""verl's `main_ppo` with counterfactual token weights: `python examples/verl/main_ccapo.py [overrides]`.

The same entry point as `python -m verl.trainer.main_ppo`, with config/ccapo_grpo_gsm8k.yaml
(verl's ppo_trainer.yaml plus a `counterfactual` section), verl's own config checks, and verl's task
runner replaced by `CounterfactualTaskRunner`, which registers the "ccapo_*" trainer modes in
its own process. Recipe: docs/integrations.md, "verl".

The config is resolved here, in the launching shell's process: verl resolves it again inside its
TaskRunner, a Ray actor whose environment is the one `ray start` had, so `${oc.env:...}` values
(the admin key, `sync_dir`, the data paths) would otherwise be read there, not from this shell.
"""

from __future__ import annotations

import hydra
from ccapo_adapters.config import CounterfactualConfig, section_of
from ccapo_adapters.verl_runner import CounterfactualTaskRunner
from omegaconf import DictConfig, OmegaConf
from verl.trainer.main_ppo import run_ppo
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import validate_config
from verl.utils.device import auto_set_device


def checked(config: DictConfig) -> DictConfig:
    """`config` resolved here (see the module docstring), after verl's own checks and ccapo's."""
    auto_set_device(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    mode = config.trainer.v1.trainer_mode
    if not config.trainer.use_v1 or not mode.startswith("ccapo_"):
        raise ValueError("set trainer.use_v1=true and trainer.v1.trainer_mode to ccapo_sync (or ccapo_*_async)")
    rollout = config.actor_rollout_ref.rollout
    if mode == "ccapo_separate_async" and rollout.nnodes * rollout.n_gpus_per_node <= 0:
        raise ValueError(
            f"trainer_mode ccapo_separate_async generates on GPUs of its own, and the rollout has "
            f"{rollout.nnodes} nodes x {rollout.n_gpus_per_node} GPUs: set ROLLOUT_GPUS for run_gsm8k_grpo.sh (or "
            "actor_rollout_ref.rollout.nnodes and n_gpus_per_node), or use ccapo_sync / ccapo_colocate_async"
        )
    OmegaConf.resolve(config)
    section = section_of(config)
    settings = CounterfactualConfig.model_validate(
        OmegaConf.to_container(section) if isinstance(section, DictConfig) else section
    )
    if settings.scores and settings.sync_every and not settings.admin_key:
        raise ValueError(
            "policy sync has the scorer load the policy, which needs its admin key: export CCAPO_ADMIN_KEY "
            "(the scorer's) before launching, or set counterfactual.admin_key; counterfactual.sync_every=0 keeps "
            "the scorer's model"
        )
    return config


@hydra.main(config_path="config", config_name="ccapo_grpo_gsm8k", version_base=None)
def main(config: DictConfig) -> None:
    run_ppo(checked(config), task_runner_class=CounterfactualTaskRunner)


if __name__ == "__main__":
    main()
