"""Helpers of the slow-swap tests (here, in the trainer's tests and in the OpenRLHF environment's):
a provider config that pushes every step and waits `swap_wait_s` for a swap, and waiting for it to go live."""

from __future__ import annotations

import time
from pathlib import Path

from ccapo_adapters import CounterfactualConfig, WeightProvider


def slow_sync_config(
    url: str, sync_dir: Path | str, client_timeout_s: float, swap_wait_s: float
) -> CounterfactualConfig:
    """Remote scoring at `url`, a policy push every step to `sync_dir`, with the given client timeout and swap wait."""
    return CounterfactualConfig(
        provider="remote",
        server_url=url,
        admin_key="admin",
        sync_every=1,
        sync_dir=str(sync_dir),
        request_timeout_s=client_timeout_s,
        swap_wait_s=swap_wait_s,
    )


def wait_until_live(provider: WeightProvider, within_s: float = 60.0) -> None:
    """Until the provider's pending push is live (or failed): the server then takes the next one."""
    deadline = time.monotonic() + within_s
    while provider.swap_pending():
        assert time.monotonic() < deadline, "the swap never went live"
        time.sleep(0.2)
