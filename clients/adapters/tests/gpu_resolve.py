"""What a GPU user's install resolves to against the package index, without installing it.

One resolver run (`pip install --dry-run --ignore-installed --report`) in the framework's own
environment; no CUDA is needed to resolve CUDA wheels' metadata. An unreachable index skips the
test: there is nothing to resolve against. Run by `make test-install`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest


def index_url() -> str:
    return os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")


def resolve(
    packages: list[str],
    framework: str,
    workdir: Path,
    *pip_args: str,
    env: dict[str, str] | None = None,
    timeout: float = 1200,
) -> dict[str, dict[str, Any]]:
    """The metadata pip would install for `packages`, by lower-case distribution name."""
    try:
        httpx.get(f"{index_url()}/{framework}/", timeout=20, follow_redirects=True).raise_for_status()
    except httpx.HTTPError as err:
        pytest.skip(f"the package index {index_url()} is unreachable from here ({err}): nothing to resolve against")
    report = workdir / "report.json"
    command = ["install", "--dry-run", "--ignore-installed", *pip_args, "--quiet", "--report", str(report)]
    done = subprocess.run(
        [sys.executable, "-m", "pip", *command, *packages],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    installed = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"].lower(): item["metadata"] for item in installed}
