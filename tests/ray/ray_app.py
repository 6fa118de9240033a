"""What the Ray tests share: the keys the application runs with, and a view of the running application."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

API_KEY = "ray-test-key"
ADMIN_KEY = "ray-admin-key"
REPLICAS = 2
READY_TIMEOUT_S = 180.0


@dataclass
class RayApp:
    url: str
    handle: Any  # the application's ingress
    registry: Any
    root: Path

    def headers(self, admin: bool = False) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_KEY if admin else API_KEY}"}

    def replicas(self) -> dict[str, dict[str, Any]]:
        """What each live replica reports serving."""
        return self.registry.replicas.remote().result()

    def wait_replicas(self, done: Callable[[dict[str, dict[str, Any]]], bool], timeout: float = 60) -> dict[str, Any]:
        """`replicas()` once `done` holds for it (the registry hears from a new replica within a heartbeat)."""
        deadline = time.monotonic() + timeout
        while not done(replicas := self.replicas()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the replicas did not get there within {timeout:g} s: {replicas}")
            time.sleep(0.2)
        return replicas

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until /readyz is 200: every replica serves the current model."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = httpx.get(f"{self.url}/readyz", timeout=10)
            if last.status_code == 200:
                return
            time.sleep(0.5)
        raise TimeoutError(f"not ready within {timeout:g} s: {last.text if last else ''}")

    def swap(self, name: str) -> httpx.Response:
        return httpx.post(
            f"{self.url}/v1/model", json={"model": name}, headers=self.headers(admin=True), timeout=READY_TIMEOUT_S
        )
