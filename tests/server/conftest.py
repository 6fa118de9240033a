"""Servers shared by the server tests (each a real uvicorn process), and what they serve."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from live_server import start_server


@pytest.fixture(scope="session")
def text_trace() -> dict[str, Any]:
    """A short scorable text trace."""
    return {
        "prompt": "A box holds 12 muffins. How many muffins are in 11 boxes?",
        "completion": "Let me think about the boxes.\nEach box holds 12, so 11 × 12 = 132 muffins.\n#### 132",
    }


@pytest.fixture(scope="session")
def open_limits() -> dict[str, int]:
    """`open_server`'s request limits: small enough that the error tests reach them with small requests."""
    return {"max_tokens_per_trace": 300, "max_traces_per_request": 8, "max_body_bytes": 64 * 1024}


@pytest.fixture(scope="session")
def open_server(tiny_model_dir: str, open_limits: dict[str, int]) -> Iterator[str]:
    """No keys, admin routes off, small request limits."""
    env = {f"CCAPO_{name.upper()}": str(value) for name, value in open_limits.items()}
    with start_server(tiny_model_dir, env) as url:
        yield url
