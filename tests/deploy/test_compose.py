"""docker-compose.yml validates and wires the trainer to the scorer; the trainer config it runs parses.

No Docker daemon is needed: `docker compose config` (the plugin) or Debian's `docker-compose`
(`make test` installs it where it can) validates and interpolates the file offline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from ccapo_trainer.config import load_config

ROOT = Path(__file__).resolve().parents[2]
ENV = {"CCAPO_ADMIN_KEY": "admin-secret", "CCAPO_API_KEY": "score-secret"}


def _compose_command() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def _compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = _compose_command()
    if command is None:
        pytest.skip("no docker compose plugin and no Debian docker-compose (make test installs it as root)")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CCAPO_")}
    return subprocess.run(
        [*command, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**clean, **env},
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as the compose tool resolves it, with both keys set."""
    out = _compose_config(ENV)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)  # JSON from the plugin is YAML too


def test_the_scorer_gets_a_gpu_and_a_health_check(compose: dict[str, Any]) -> None:
    scorer = compose["services"]["scorer"]
    assert scorer["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "/readyz" in " ".join(scorer["healthcheck"]["test"])
    assert scorer["environment"]["CCAPO_ADMIN_KEY"] == ENV["CCAPO_ADMIN_KEY"]


def test_the_trainer_runs_ccapo_train_against_the_scorer(compose: dict[str, Any]) -> None:
    services = compose["services"]
    trainer = services["trainer"]
    command = trainer["command"]
    assert command[:4] == ["ccapo", "train", "--config", "configs/compose_remote.yaml"]
    assert f"counterfactual.admin_key={ENV['CCAPO_ADMIN_KEY']}" in command
    assert trainer["depends_on"]["scorer"]["condition"] == "service_healthy"

    config = load_config(ROOT / command[3], command[4:])
    weighting = config.counterfactual
    assert (weighting.provider, weighting.server_url, weighting.weighting) == (
        "remote",
        "http://scorer:8000",
        "counterfactual",
    )
    assert weighting.admin_key == ENV["CCAPO_ADMIN_KEY"] and weighting.api_key == ENV["CCAPO_API_KEY"]
    assert weighting.sync_every >= 1

    # The policy goes through a volume both services mount, under a root the scorer may load from.
    def mounts(service: dict[str, Any]) -> dict[str, str]:
        pairs = [v.split(":")[:2] if isinstance(v, str) else (v["source"], v["target"]) for v in service["volumes"]]
        return {target: source for source, target in pairs}

    roots = json.loads(services["scorer"]["environment"]["CCAPO_MODEL_ROOTS"])
    root = next(r for r in roots if Path(weighting.sync_dir).is_relative_to(r))
    assert mounts(trainer)[root] == mounts(services["scorer"])[root]


def test_without_an_admin_key_compose_refuses_and_says_why() -> None:
    out = _compose_config({})
    assert out.returncode != 0
    assert "set CCAPO_ADMIN_KEY" in out.stderr


def test_the_compose_trainer_config_parses_without_compose() -> None:
    """The config file alone (no interpolation): the remote provider and the scorer's address."""
    config = load_config(ROOT / "configs" / "compose_remote.yaml")
    weighting = config.counterfactual
    assert (weighting.provider, weighting.server_url, weighting.sync_dir) == (
        "remote",
        "http://scorer:8000",
        "/checkpoints/policy",
    )
