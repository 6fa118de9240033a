"""Reading values out of the server's /metrics text."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families


def sample(base_url: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The value of one sample (e.g. "ccapo_batch_traces_count"); 0 when the server has not recorded it yet."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in (labels or {}).items()):
                return s.value
    return 0.0


def wait_for_queue(base_url: str, depth: int, within_s: float = 5.0) -> None:
    """Until the server's queue holds exactly `depth` traces; fails after `within_s`."""
    deadline = time.monotonic() + within_s
    while sample(base_url, "ccapo_queue_traces") != depth:
        assert time.monotonic() < deadline, f"the queue did not hold {depth} traces within {within_s:g} s"
        time.sleep(0.02)
