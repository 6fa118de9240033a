"""OpenRLHF's `train_ppo_ray` with counterfactual token weights.

    cd examples/openrlhf && python train_ppo_ccapo.py --counterfactual counterfactual.json [train_ppo_ray's flags]

OpenRLHF's PPO trainer is a Ray actor that builds its experience maker itself, so the weighting is
installed in every Ray worker through Ray's `worker_process_setup_hook`
(`ccapo_adapters.openrlhf_hook.install`, standard library only: it patches OpenRLHF's PPO trainer
module when OpenRLHF imports it); the settings travel in the runtime env. Then
OpenRLHF's own `cli/train_ppo_ray.py` runs unchanged. Recipe: docs/integrations.md, "OpenRLHF".
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import warnings
from pathlib import Path

import ray
from ccapo_adapters import CounterfactualConfig
from ccapo_adapters.openrlhf import SETTINGS_ENV

# What train_ppo_ray's own ray.init sets (it skips its init when Ray is already up).
OPENRLHF_ENV = {"TOKENIZERS_PARALLELISM": "true", "NCCL_DEBUG": "WARN", "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=False)
    parser.add_argument("--counterfactual", type=Path, help="JSON of CounterfactualConfig's fields (required)")
    parser.add_argument("--ccapo", type=Path, help=argparse.SUPPRESS)  # its name before 0.2.0
    ours, openrlhf_args = parser.parse_known_args()
    if ours.ccapo is not None:
        warnings.warn("--ccapo is now --counterfactual: rename it", FutureWarning, stacklevel=1)
    if (ours.counterfactual is None) == (ours.ccapo is None):
        parser.error("give the weighting settings once: --counterfactual SETTINGS.json")
    settings = json.loads((ours.counterfactual or ours.ccapo).read_text())
    # Secrets and cluster paths stay out of the JSON: the launch script exports them.
    for field, variable in (("admin_key", "CCAPO_ADMIN_KEY"), ("sync_dir", "CCAPO_SYNC_DIR")):
        if variable in os.environ:
            settings.setdefault(field, os.environ[variable])
    CounterfactualConfig.model_validate(settings)  # bad settings fail here
    env = {name: os.environ.get(name, default) for name, default in OPENRLHF_ENV.items()}
    ray.init(
        runtime_env={
            "worker_process_setup_hook": "ccapo_adapters.openrlhf_hook.install",
            "env_vars": {**env, SETTINGS_ENV: json.dumps(settings)},
        }
    )
    sys.argv = ["train_ppo_ray", *openrlhf_args]
    runpy.run_module("openrlhf.cli.train_ppo_ray", run_name="__main__")


if __name__ == "__main__":
    main()
