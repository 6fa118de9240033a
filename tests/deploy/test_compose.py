"""docker-compose.yml is valid for `docker compose` (when the docker CLI with compose is present)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _compose_available(), reason="the docker CLI with the compose plugin is not installed")
def test_compose_config_is_valid():
    out = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    config = json.loads(out.stdout)
    scorer = config["services"]["scorer"]
    assert scorer["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "/readyz" in " ".join(scorer["healthcheck"]["test"])
    assert config["services"]["trainer"]["environment"]["CCAPO_SCORER_URL"] == "http://scorer:8000"
