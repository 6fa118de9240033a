"""`ccapo serve --ray --detach`: one command deploys the scorer into a running cluster and returns;
a trainer on that cluster finds it by its application name (`provider: ray`, `ray_app`)."""

from __future__ import annotations

import os
import subprocess
import sys

import ray
import torch
from ccapo_adapters.provider import provider_from_settings
from live_server import SERVER_SRC
from ray import serve
from ray_app import API_KEY, RayApp
from transformers import AutoTokenizer

from ccapo.examples import load_examples

APP = "ccapo-detached"


def test_a_detached_scorer_outlives_its_command_and_is_found_by_name(ray_app: RayApp) -> None:
    port = ray_app.url.rsplit(":", 1)[1]  # the cluster's Serve proxy, already started by the fixture
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "CCAPO_API_KEY": API_KEY}
    env["PYTHONPATH"] = os.pathsep.join([str(SERVER_SRC), env.get("PYTHONPATH", "")])
    command = ["--ray", "--detach", "--app-name", APP, "--replica-cpus", "0.5", "--port", port]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "ccapo_server", *command, "--model", str(ray_app.root / "tiny-a")],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert serve.status().applications[APP].status == "RUNNING"  # the command has exited; the app stays

        settings = {"provider": "ray", "api_key": API_KEY, "sync_every": 0}
        found = provider_from_settings({**settings, "ray_app": APP})  # what the trainer's config names
        assert found.scorer.model_info().id == str(ray_app.root / "tiny-a")
        assert ray_app.swap("tiny-a").status_code == 200  # the fixture's app, whichever test ran before
        reference = provider_from_settings(settings)  # the default name: the fixture's application
        tokenizer = AutoTokenizer.from_pretrained(ray_app.root / "tiny-a")
        traces = load_examples()[:3]
        ids = (
            [tokenizer(t.prompt).input_ids for t in traces],
            [tokenizer(t.completion, add_special_tokens=False).input_ids for t in traces],
        )
        ours, theirs = found.weights(*ids), reference.weights(*ids)
        assert ours.errors == [None] * len(traces) and not torch.all(ours.weights == 1.0)
        torch.testing.assert_close(ours.weights, theirs.weights)
    finally:
        if APP in serve.status().applications:
            serve.delete(APP)
