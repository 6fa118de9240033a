"""`ccapo serve --ray` flags: Ray flags without --ray, and a replica count below 1, are usage errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from live_server import SERVER_SRC


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--replicas", "2"], "--replicas needs --ray"),
        (["--detach"], "--detach needs --ray"),
        (["--ray", "--replicas", "0"], "--replicas must be 1 or more"),
    ],
)
def test_bad_ray_flags_exit_2_with_what_to_fix(flags: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ccapo_server", *flags],
        env={"PYTHONPATH": str(SERVER_SRC), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr
