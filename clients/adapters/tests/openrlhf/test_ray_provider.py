"""`provider: ray` where OpenRLHF runs: its own Ray (2.55, OpenRLHF's pin), the scorer deployed into that cluster.

The cluster is started as a user starts it, `ray start --head` from OpenRLHF's environment (its own
temporary directory and ports; stopped with the test). The scorer is deployed into it with
`ccapo serve --ray --detach` from ccapo's environment on the same Ray version (`.venv-ray-min`,
`make ray-min-env`: ccapo[ray] with ray[serve]==2.55.0). This process then joins the cluster as
OpenRLHF's trainer does and builds the provider from the recipe's settings: weights through the
Serve handle must equal the HTTP server's for the same model, and a policy push goes through.
Cost: a Ray head and the scorer's start, about a minute on 2 quiet cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from adapter_traces import COMPLETIONS, PROMPTS, encode
from ccapo_adapters import CounterfactualConfig, WeightProvider
from ccapo_adapters.provider import provider_from_settings
from live_server import free_port

REPO = Path(__file__).resolve().parents[4]
RECIPE = REPO / "examples" / "openrlhf"
RAY_MIN_PYTHON = REPO / ".venv-ray-min" / "bin" / "python"


def scorer_python() -> Path:
    python = Path(os.environ.get("CCAPO_RAY_MIN_PYTHON", RAY_MIN_PYTHON))
    if not python.exists():
        raise RuntimeError(
            f"{python} is missing: `make ray-min-env` builds ccapo's environment on OpenRLHF's Ray version, "
            "whose scorer joins this Ray cluster (or set CCAPO_RAY_MIN_PYTHON)"
        )
    return python


@pytest.fixture(scope="module")
def cluster(tiny_model_dir: str, model_root: Path) -> Iterator[str]:
    """A Ray head of OpenRLHF's Ray, with the scorer deployed into it as the application "ccapo"; its address."""
    import ray

    python = scorer_python()
    ray_cli = Path(sys.executable).with_name("ray")
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths
    port = free_port()
    head = subprocess.Popen(
        [
            *(str(ray_cli), "start", "--head", "--block", f"--port={port}", f"--temp-dir={temp}"),
            *("--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"),
        ],
        env={**os.environ, "RAY_ADDRESS": ""},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"127.0.0.1:{port}"
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CCAPO_")}
        env.update(RAY_ADDRESS=address, CCAPO_ADMIN_KEY="admin", CCAPO_MODEL_ROOTS=str(model_root))
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "server"), env.get("PYTHONPATH", "")])
        command = ["--ray", "--detach", "--replica-cpus", "0.5", "--port", str(free_port()), "--model", tiny_model_dir]
        deadline = time.monotonic() + 120
        while True:  # until the head takes drivers
            done = subprocess.run(
                [str(python), "-m", "ccapo_server", *command], env=env, capture_output=True, text=True, timeout=900
            )
            if done.returncode == 0 or "found none" not in done.stderr or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert done.returncode == 0, done.stderr[-4000:]
        ray.init(address=address, log_to_driver=False)
        yield address
    finally:
        ray.shutdown()
        head.terminate()  # --block: stopping the command stops the head's processes
        head.wait(60)
        shutil.rmtree(temp, ignore_errors=True)


def test_the_recipes_ray_provider_scores_through_openrlhfs_ray(cluster, tokenizer, server_url, model_root):
    import ray

    assert ray.__version__ == "2.55.0"  # OpenRLHF 0.11.2's pin, with the serve extra
    settings = json.loads((RECIPE / "counterfactual.json").read_text())
    sync_dir = model_root / "openrlhf-ray-sync"
    provider = provider_from_settings({**settings, "admin_key": "admin", "sync_dir": str(sync_dir)})
    prompts, completions = encode(tokenizer, PROMPTS), encode(tokenizer, COMPLETIONS)
    through_ray = provider.weights(prompts, completions)
    over_http = WeightProvider.remote(CounterfactualConfig(provider="remote", server_url=server_url))
    assert through_ray.errors == [None, None] and not torch.all(through_ray.weights == 1.0)
    torch.testing.assert_close(through_ray.weights, over_http.weights(prompts, completions).weights)

    shutil.copytree(provider.scorer.model_info().id, sync_dir)  # the policy the actor would have saved
    assert provider.load_policy(str(sync_dir), 0) and provider.synced_step == 0
