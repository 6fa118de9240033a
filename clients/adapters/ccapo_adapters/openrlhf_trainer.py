"""OpenRLHF's PPO trainer with counterfactual weights: `install()` swaps in the weighting experience maker.

OpenRLHF 0.11's `PPOTrainer` (and `PPOTrainerAsync`) is a `@ray.remote` actor that builds a
`RemoteExperienceMaker`, looked up in `openrlhf.trainer.ppo_trainer` when the actor starts; a
subclass of either trainer is never used by `cli/train_ppo_ray.py`. So `install()` replaces that
name with `CounterfactualExperienceMaker`, in every Ray worker: the entry point
(examples/openrlhf/train_ppo_ccapo.py) sets Ray's `worker_process_setup_hook` to this function.

Importing this module needs OpenRLHF's GPU stack (flash-attn, DeepSpeed and vLLM are imported by
the experience maker and the trainer).
"""

from __future__ import annotations

from openrlhf.trainer import ppo_trainer
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

from ccapo_adapters.openrlhf import CounterfactualAdvantages


class CounterfactualExperienceMaker(CounterfactualAdvantages, RemoteExperienceMaker):
    """OpenRLHF's experience maker whose advantages carry counterfactual token weights."""


def install() -> None:
    """Ray's `worker_process_setup_hook`: OpenRLHF's PPO trainers build the weighting experience maker."""
    ppo_trainer.RemoteExperienceMaker = CounterfactualExperienceMaker
