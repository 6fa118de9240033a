"""Fixtures shared by the verl and OpenRLHF tests: a real ccapo scoring server, run by the main environment.

Those environments pin transformers versions the core cannot use, so the server runs as a
subprocess of the main environment's Python, named by CCAPO_SERVER_PYTHON (the Makefile sets it
to .venv/bin/python), with the tiny llama that Python saves (`save_tiny_model.py`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[3] / "tests"
sys.path.insert(0, str(TESTS))

from live_server import spawn_server, wait_ready  # noqa: E402  (the main suite's server launcher)

ADMIN_KEY = "admin"
READY_TIMEOUT_S = 180.0  # these suites start Ray beside the server: on a loaded 2-core machine it starts slowly


def main_python() -> str:
    python = os.environ.get("CCAPO_SERVER_PYTHON")
    if not python or not Path(python).exists():
        raise RuntimeError(
            "set CCAPO_SERVER_PYTHON to the main environment's python (make test does: .venv/bin/python); "
            "the scoring server needs ccapo, which this environment cannot install"
        )
    return python


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("tiny-llama")
    script = Path(__file__).with_name("save_tiny_model.py")
    subprocess.run([main_python(), str(script), str(path)], check=True, timeout=600)
    return str(path)


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir: str):
    """The tiny llama's tokenizer, as the framework under test would load it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where tests save policies the server may load (its CCAPO_MODEL_ROOTS)."""
    return tmp_path_factory.mktemp("policies")


@pytest.fixture(scope="session")
def server_url(tiny_model_dir: str, model_root: Path) -> Iterator[str]:
    """A real scoring server (uvicorn on loopback) serving the tiny llama; admin key "admin"."""
    main_python()
    env = {"CCAPO_ADMIN_KEY": ADMIN_KEY, "CCAPO_MODEL_ROOTS": str(model_root)}
    server = spawn_server(tiny_model_dir, env)
    try:
        wait_ready(server, READY_TIMEOUT_S)
        yield server.url
    finally:
        server.discard()
