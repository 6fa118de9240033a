"""A step's traces go out as several requests: a part past the server's deadline is sent again, and a part
that fails through its retries leaves only its own rows uniform.

One real server on loopback (`slow_scoring_server`) takes two traces per request and lets the
scoring batches chosen by number outlast its 2 s deadline, so those requests get the server's own
504. The client sends one part at a time, so batch k is the k-th attempt, in the order below.
Cost: one server start and about ten 2 s deadlines.
"""

from __future__ import annotations

import logging

import pytest
import torch
from adapter_traces import COMPLETIONS, PROMPTS, encode
from ccapo_adapters.batch import score_token_batch
from ccapo_client import DeadlineExceededError, PartialScoreError, RemoteScorer
from live_server import spawn_server, wait_ready

DEADLINE_S = 2.0
# Four distinct traces (identical ones are scored once), two per request: rows 0-1 are part 0, rows 2-3 part 1.
ROWS = [(p, c) for p in range(2) for c in range(2)]
# Attempts, in order: a retried part (1 slow, 2 its retry, 3 part 1), a part failing its three tries through
# the adapters' batch (4-6, then 7 part 1), the same as the scorer raises it (8-10, then 11).
SLOW = {1, 4, 5, 6, 8, 9, 10}


@pytest.fixture(scope="module")
def stalling_url(tiny_model_dir):
    env = {"CCAPO_REQUEST_TIMEOUT_S": str(DEADLINE_S), "CCAPO_MAX_TRACES_PER_REQUEST": "2"}
    server = spawn_server(tiny_model_dir, env, slow_batches=SLOW)
    try:
        wait_ready(server)
        yield server.url
    finally:
        server.discard()


@pytest.fixture(scope="module")
def ids(tokenizer):
    prompts, completions = encode(tokenizer, PROMPTS), encode(tokenizer, COMPLETIONS)
    return [prompts[p] for p, _ in ROWS], [completions[c] for _, c in ROWS]


def test_a_slow_part_is_retried_and_one_failing_every_try_leaves_only_its_rows_uniform(
    stalling_url, scorer, ids, caplog
):
    reference = score_token_batch(scorer, *ids)  # the same model in process
    remote = RemoteScorer(stalling_url, max_concurrency=1, part_retries=2, backoff=0.05, max_backoff=0.2)

    with caplog.at_level(logging.INFO, logger="ccapo_client.remote"):
        batch = score_token_batch(remote, *ids)
    assert "sending them again" in caplog.text and "deadline" in caplog.text
    assert batch.errors == [None] * 4 and batch.scorer_error is None
    torch.testing.assert_close(batch.weights, reference.weights)

    batch = score_token_batch(remote, *ids)
    assert batch.scorer_error is None
    assert [error is not None for error in batch.errors] == [True, True, False, False]
    assert batch.errors[0].startswith("DeadlineExceededError")
    assert torch.all(batch.weights[:2] == 1.0)
    torch.testing.assert_close(batch.weights[2:], reference.weights[2:])
    assert batch.metrics()["weights/scored_share"] == 0.5

    with pytest.raises(PartialScoreError) as raised:
        remote.score([{"prompt_ids": p, "completion_ids": c} for p, c in zip(*ids, strict=True)])
    assert sorted(raised.value.errors) == [0, 1]
    assert all(isinstance(err, DeadlineExceededError) for err in raised.value.errors.values())
    assert raised.value.results[:2] == [None, None] and None not in raised.value.results[2:]
