"""Served results against the in-process library's: equal, floats within TOLERANCE."""

from __future__ import annotations

from typing import Any

import pytest

TOLERANCE = 1e-4


def assert_close(served: Any, local: Any, path: str = "") -> None:
    """Equal, except floats, which may differ by TOLERANCE (batch composition changes the sums' order)."""
    if isinstance(local, float) and isinstance(served, int | float):
        assert served == pytest.approx(local, abs=TOLERANCE), path
    elif isinstance(local, dict):
        assert isinstance(served, dict) and served.keys() == local.keys(), path
        for key in local:
            assert_close(served[key], local[key], f"{path}.{key}")
    elif isinstance(local, list | tuple):
        assert isinstance(served, list) and len(served) == len(local), path
        for i, (s, v) in enumerate(zip(served, local, strict=True)):
            assert_close(s, v, f"{path}[{i}]")
    else:
        assert served == local, path
