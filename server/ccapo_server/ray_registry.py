"""Which model the Ray Serve replicas should serve, and which of them serve it: the one source of truth.

Replicas report here every `HEARTBEAT_S` and learn the desired model; a replica that Ray starts
later reads it before loading, so it comes up on the model swapped in last, not the original.
The ingress asks here whether every replica is ready, and takes the swap lease.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

HEARTBEAT_S = 0.5
STALE_S = 3.0  # a replica not heard from for this long is gone (Ray replaces it)
SWAP_LEASE_S = 900.0  # a swap whose ingress died frees the lock after this long


@dataclass
class ReplicaState:
    version: int
    model_id: str
    source: str | None
    error: str | None  # why it could not load the desired model, if it could not
    seen: float
    metrics: str = ""  # its Prometheus text, as of this report


class ModelRegistry:
    """The desired model (`source`, `version`) and each replica's last report."""

    def __init__(self, source: str | None):
        self.source = source
        self.name: str | None = None  # the model's public name; None: the first model's own id
        self.version = 1  # each replica's first model is version 1, as in the single server
        self._replicas: dict[str, ReplicaState] = {}
        self._swap_until = 0.0

    def desired(self) -> tuple[str | None, str | None, int]:
        """What to load, the name to serve it as, and its version."""
        return self.source, self.name, self.version

    def report(
        self,
        replica: str,
        version: int,
        model_id: str,
        source: str | None,
        error: str | None = None,
        metrics: str = "",
    ) -> tuple[str | None, str | None, int]:
        """A replica's heartbeat; returns the model it should serve (as `desired`)."""
        now = time.monotonic()
        self._replicas[replica] = ReplicaState(version, model_id, source, error, now, metrics)
        if version > self.version and now >= self._swap_until:
            # A newer model than this registry knows, with no swap under way: this registry was
            # restarted and lost its state, or a swap's ingress died before committing. Adopt it.
            self.source, self.name, self.version = source, model_id, version
        return self.desired()

    def replicas(self) -> dict[str, dict[str, object]]:
        """The live replicas and what each serves: for operators and tests."""
        now = time.monotonic()
        return {
            name: {"version": s.version, "model_id": s.model_id, "source": s.source, "error": s.error}
            for name, s in self._replicas.items()
            if now - s.seen < STALE_S
        }

    def metrics(self) -> dict[str, str]:
        """Each live replica's Prometheus text."""
        now = time.monotonic()
        return {name: s.metrics for name, s in self._replicas.items() if now - s.seen < STALE_S}

    def begin_swap(self) -> bool:
        """Take the swap lease; False while another swap holds it."""
        now = time.monotonic()
        if now < self._swap_until:
            return False
        self._swap_until = now + SWAP_LEASE_S
        return True

    def commit_swap(self, source: str, name: str, version: int) -> None:
        self.source, self.name, self.version = source, name, max(version, self.version + 1)

    def end_swap(self) -> None:
        self._swap_until = 0.0

    def readiness(self, target: int) -> dict[str, object]:
        """Whether `target` live replicas serve the desired version; otherwise why not."""
        now = time.monotonic()
        live = {name: s for name, s in self._replicas.items() if now - s.seen < STALE_S}
        current = [s for s in live.values() if s.version == self.version]
        errors = [f"{name}: {s.error}" for name, s in live.items() if s.error]
        ready = len(current) >= target
        model_id = current[0].model_id if current else None
        message = f"{len(current)} of {target} replicas serve model version {self.version}" + (
            f"; could not load it: {'; '.join(errors)}" if errors else ""
        )
        return {"ready": ready, "version": self.version, "model_id": model_id, "message": message, "errors": errors}
