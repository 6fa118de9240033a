"""An in-process scorer of the tiny llama, and a scoring server whose swaps load slowly, for the adapter tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from live_server import spawn_server, wait_ready
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ccapo import Scorer


@pytest.fixture(scope="session")
def scorer(llama: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> Scorer:
    """The tiny llama scoring in-process; the `server_url` fixture serves the same weights."""
    return Scorer(llama, tokenizer)


SLOW_LOAD_S = 4.0  # each policy swap's load: four times the clients' timeout, short enough for a test


@dataclass
class SlowServer:
    url: str
    roots: Path  # what it may load: push policies under it
    load_s: float = SLOW_LOAD_S
    client_timeout_s: float = SLOW_LOAD_S / 4  # a read timeout the load outlasts

    def version(self) -> str:
        return httpx.get(f"{self.url}/v1/model").json()["version"]


@pytest.fixture(scope="session")
def slow_server(tiny_model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlowServer]:
    """A real scoring server whose model swaps load SLOW_LOAD_S seconds slower (client_timeout_s is shorter)."""
    roots = tmp_path_factory.mktemp("slow-roots")
    env = {"CCAPO_ADMIN_KEY": "admin", "CCAPO_MODEL_ROOTS": str(roots)}
    server = spawn_server(tiny_model_dir, env, load_delay_s=SLOW_LOAD_S)
    try:
        wait_ready(server)
        yield SlowServer(server.url, roots)
    finally:
        server.discard()
