"""Requests that cost the server a known, large amount of work, for the abuse and shutdown tests."""

from __future__ import annotations

from typing import Any

# Forward passes of at most 512 tokens: every counterfactual row of `heavy_trace` is a pass of its own,
# so a few such traces take seconds and there is a pass boundary every few milliseconds.
SLOW_ENGINE = {
    "CCAPO_ENGINE_BATCH_TOKENS": "512",
    "CCAPO_MAX_WAIT_MS": "0",
    "CCAPO_MAX_COUNTERFACTUALS_PER_TRACE": "60",
    "CCAPO_MAX_FEED_TOKENS_PER_TRACE": "55000",
    "CCAPO_MAX_FEED_TOKENS_PER_REQUEST": "600000",
    "CCAPO_MAX_QUEUE_TOKENS": "600000",
}


def heavy_trace(spans: int = 60, words: int = 800) -> dict[str, Any]:
    """~`words` completion tokens with one-word custom spans at the start: every row recomputes about as many
    (~47k feed tokens in all with the defaults)."""
    completion = "apple " * words + "\n#### 5"
    return {"prompt": "Count.", "completion": completion, "spans": [[6 * k, 6 * k + 5] for k in range(spans)]}
