"""verl's real trainer pieces on CPU: its config, a local Ray instance and TransferQueue, a real scoring server.

Run in .venv-verl (`make verl-env`), where verl 0.9.1 and its pins are installed and ccapo is not.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "tests" / "integrations"))

from scoring_server import model_root, server_url, tiny_model_dir, tokenizer  # noqa: F401  (session fixtures)


@pytest.fixture(scope="session")
def transfer_queue() -> Iterator[None]:
    """verl's v1 trainer keeps rollouts in TransferQueue, whose controller and storage are Ray actors.

    One local Ray instance (2 CPUs, no dashboard) for the whole session: it takes ~20 s to start.
    """
    import ray
    import transfer_queue as tq
    from omegaconf import OmegaConf

    ray.init(num_cpus=2, include_dashboard=False)
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
