"""The scoring server as a real process, for tests of the server, the client and deployments.

    with start_server(model_dir, env={"CCAPO_MAX_WAIT_MS": "50"}) as url:
        httpx.post(f"{url}/v1/importance", json={"traces": [...]})

The server runs as `python -m ccapo_server` on 127.0.0.1, with this checkout's `server/` on its
PYTHONPATH so it works whether or not the package is installed. CCAPO_* settings of the calling
environment are not inherited (a developer's CCAPO_API_KEY must not change what a test sees);
CCAPO_CACHE, where the core library keeps converted models, is. CCAPO_SERVER_PYTHON names another
interpreter to run it (the verl and OpenRLHF tests run where ccapo itself cannot be installed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

SERVER_SRC = Path(__file__).resolve().parents[1] / "server"
SLOW_LOADING_SERVER = Path(__file__).resolve().parent / "slow_loading_server.py"
SLOW_SCORING_SERVER = Path(__file__).resolve().parent / "slow_scoring_server.py"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
_INHERITED_CCAPO = {"CCAPO_CACHE"}


def free_port() -> int:
    """A loopback port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def discard(self) -> None:
        """Stop the server if it still runs, and remove its log."""
        stop_server(self)
        self.log.unlink(missing_ok=True)


def spawn_server(
    model_dir: str,
    env: dict[str, str] | None = None,
    port: int | None = None,
    load_delay_s: float | None = None,
    slow_batches: set[int] | None = None,
) -> ServerProcess:
    """Launch the server; it is not ready yet (see `wait_ready`). Output goes to a temporary log file.

    With `load_delay_s`, every model swap loads that many seconds slower (`slow_loading_server`); with
    `slow_batches`, those scoring batches (numbered from 1) outlast their requests' deadline (`slow_scoring_server`).
    """
    port = port or free_port()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("CCAPO_") or k in _INHERITED_CCAPO}
    child_env.update(env or {})
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SERVER_SRC), os.environ.get("PYTHONPATH")) if p)
    child_env["PYTHONUNBUFFERED"] = "1"
    python = os.environ.get("CCAPO_SERVER_PYTHON", sys.executable)
    fd, log = tempfile.mkstemp(prefix="ccapo-server-", suffix=".log")
    server = ["-m", "ccapo_server"]
    if load_delay_s is not None:
        server = [str(SLOW_LOADING_SERVER), str(load_delay_s)]
    elif slow_batches is not None:
        server = [str(SLOW_SCORING_SERVER), ",".join(map(str, sorted(slow_batches)))]
    with os.fdopen(fd, "wb") as out:
        process = subprocess.Popen(
            [python, *server, "--model", model_dir, "--host", "127.0.0.1", "--port", str(port)],
            env=child_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return ServerProcess(process, f"http://127.0.0.1:{port}", Path(log))


def wait_ready(server: ServerProcess, timeout: float = READY_TIMEOUT_S) -> None:
    """Poll /readyz until it answers 200; raise with the server's log if it exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited with {server.process.returncode}:\n{server.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"the server was not ready within {timeout:g} s:\n{server.log_tail()}")


def stop_server(server: ServerProcess, timeout: float = STOP_TIMEOUT_S) -> int:
    """SIGTERM, then wait (killing it after `timeout`); returns the exit code. The log stays until `discard`."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    return server.process.returncode


@contextlib.contextmanager
def start_server(model_dir: str, env: dict[str, str] | None = None, port: int | None = None) -> Iterator[str]:
    """A ready server for `model_dir` (CCAPO_* settings in `env`); yields its base URL, stops it on exit."""
    server = spawn_server(model_dir, env, port)
    try:
        wait_ready(server)
        yield server.url
    finally:
        server.discard()
