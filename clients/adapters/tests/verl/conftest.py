"""verl's real trainer pieces on CPU: its config, a local Ray instance and TransferQueue, a real scoring server.

Run in .venv-verl (`make verl-env`), where verl 0.9.1 and its pins are installed and ccapo is not.
This process and every Ray worker run on verl's CPU platform (`cpu_platform.py`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "tests" / "integrations"))

from cpu_platform import verl_cpu_env
from scoring_server import model_root, server_url, tiny_model_dir, tokenizer  # noqa: F401  (session fixtures)

CPU_ENV = verl_cpu_env()
os.environ.update(CPU_ENV)  # before verl first asks for its platform


@pytest.fixture(scope="session")
def transfer_queue() -> Iterator[None]:
    """verl's v1 trainer keeps rollouts in TransferQueue, whose controller and storage are Ray actors.

    One local Ray instance (no dashboard) for the whole session: it takes ~20 s to start. Its workers
    load verl's CPU platform; its CPUs are logical (TransferQueue's actors and an actor worker group).
    """
    import ray
    import transfer_queue as tq
    from omegaconf import OmegaConf

    ray.init(num_cpus=4, include_dashboard=False, runtime_env={"env_vars": CPU_ENV})
    tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1, "total_storage_size": 1000}}}))
    try:
        yield
    finally:
        tq.close()
        ray.shutdown()


def verl_config(*overrides: str):
    """verl's own `ppo_trainer.yaml` (what `main_ppo` composes), GRPO with 2 samples per prompt."""
    import verl
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        config = compose(
            "ppo_trainer",
            overrides=[
                "algorithm.adv_estimator=grpo",
                "actor_rollout_ref.rollout.n=2",
                "actor_rollout_ref.model.path=unused-the-actor-is-never-built",
                *overrides,
            ],
        )
    OmegaConf.resolve(config)
    return config
