"""A row the scorer refuses (over a scoring server's limits, longer than the model's context) keeps uniform
weights, is counted in `ccapo/weights/refused` every step, and is logged once for the run, not once per row.

The tiny llama's 1024-token context stands in for a server's `max_tokens_per_trace`: both refuse the
trace by its index (a `TraceError` in-process, an `InvalidRequestError` over HTTP, both ValueErrors
naming `trace_index`), and the adapter handles the two alike. Cost: well under a second.
"""

from __future__ import annotations

import logging

from ccapo_adapters import CounterfactualConfig, WeightProvider


def test_refused_rows_are_counted_each_step_and_logged_once(scorer, tokenizer, caplog):
    prompt = tokenizer("What is 3 + 4?").input_ids
    fine = tokenizer("3 + 4 = 7.\n#### 7", add_special_tokens=False).input_ids
    too_long = tokenizer(" seven" * 1100 + "\n#### 7", add_special_tokens=False).input_ids
    provider = WeightProvider(CounterfactualConfig(), scorer)
    with caplog.at_level(logging.WARNING, logger="ccapo_adapters"):
        for _ in range(2):
            batch = provider.weights([prompt, prompt, prompt], [fine, too_long, too_long[:-3]])
            metrics = provider.metrics(batch)
            assert metrics["ccapo/weights/refused"] == 2.0 and metrics["ccapo/weights/failed"] == 2.0
            assert batch.results[0].status == "ok" and batch.weights[1:].eq(1.0).all()
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and "context" in refusals[0].getMessage()
