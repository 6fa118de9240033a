"""OpenRLHF's PPO trainer with counterfactual weights: `patch()` swaps in the weighting experience maker.

OpenRLHF 0.11's `PPOTrainer` (and `PPOTrainerAsync`) is a `@ray.remote` actor that builds a
`RemoteExperienceMaker`, looked up in `openrlhf.trainer.ppo_trainer` when the actor starts; a
subclass of either trainer is never used by `cli/train_ppo_ray.py`. So `patch()` replaces that
name with `CounterfactualExperienceMaker`. It runs when OpenRLHF imports that module, in every Ray
worker, through `ccapo_adapters.openrlhf_hook.install` (Ray's `worker_process_setup_hook`, set by
examples/openrlhf/train_ppo_ccapo.py), which itself imports nothing but the standard library.

Importing this module needs OpenRLHF's GPU stack (flash-attn, DeepSpeed and vLLM are imported by
the experience maker and the trainer).
"""

from __future__ import annotations

from types import ModuleType

from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

from ccapo_adapters.openrlhf import CounterfactualAdvantages


class CounterfactualExperienceMaker(CounterfactualAdvantages, RemoteExperienceMaker):
    """OpenRLHF's experience maker whose advantages carry counterfactual token weights."""


def patch(ppo_trainer: ModuleType) -> None:
    """Make `openrlhf.trainer.ppo_trainer` (the module, just loaded) build the weighting experience maker."""
    ppo_trainer.RemoteExperienceMaker = CounterfactualExperienceMaker
