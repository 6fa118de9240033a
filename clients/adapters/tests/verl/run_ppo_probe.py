"""verl's real `run_ppo` with `CounterfactualTaskRunner`, in a fresh process and Ray session, up to the built trainer.

    python run_ppo_probe.py REPORT.json SERVER_URL

`run_ppo` starts Ray as verl does (its runtime env, this config's `ray_kwargs`, no setup hook) and
runs the task runner's real `run()` in a Ray actor; `ProbeTaskRunner` leaves out only what needs
GPUs: verl's `PPOTrainer.init` (resource pools, GPU worker groups, rollout servers), the agent
loop manager built on them, and `fit`, the training loop on them, which here writes REPORT.json:
what the task runner's process had imported when `run()` began, and the trainer it built.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ray
from ccapo_adapters.verl_runner import CounterfactualTaskRunner
from verl.trainer.main_ppo import run_ppo

sys.path.insert(0, str(Path(__file__).parent))
from conftest import verl_config

REPORT, SERVER_URL = sys.argv[1], sys.argv[2]


@ray.remote
class ProbeTaskRunner(CounterfactualTaskRunner.__ray_actor_class__):
    def run(self, config):
        from verl.trainer.ppo.v1 import PPOTrainer

        imported = sorted(name for name in sys.modules if name.startswith("ccapo"))
        PPOTrainer.init = lambda trainer: None  # verl's own; CounterfactualAdvantage.init still builds the provider

        def fit(trainer, agent_loop_manager):
            provider = trainer.weight_provider
            report = {
                "imported_at_start": imported,
                "trainer": type(trainer).__name__,
                "mode": trainer.trainer_mode,
                "provider_model": provider.scorer.model_info().id,
            }
            Path(REPORT).write_text(json.dumps(report))

        PPOTrainer.fit = fit
        self.init_agent_loop_manager = lambda: None
        super().run(config)


config = verl_config(
    "trainer.v1.trainer_mode=ccapo_sync",
    "ray_kwargs.ray_init.num_cpus=4",  # logical: the task runner, TransferQueue's controller and storage
    "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
    "transfer_queue.backend.SimpleStorage.total_storage_size=1000",
    "+ray_kwargs.ray_init.include_dashboard=false",
    "+counterfactual.provider=remote",
    f"+counterfactual.server_url={SERVER_URL}",
    "+counterfactual.sync_every=0",
)
run_ppo(config, task_runner_class=ProbeTaskRunner)
