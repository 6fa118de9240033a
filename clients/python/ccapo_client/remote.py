"""`RemoteScorer`: `ccapo.Scorer.score()` over HTTP, so a trainer swaps one for the other with one setting."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ccapo_client.client import Client, Payload, _BaseClient
from ccapo_client.errors import (
    ApiError,
    DeadlineExceededError,
    NotReadyError,
    PartialScoreError,
    QueueFullError,
)
from ccapo_client.models import ModelInfo, ScoreResponse, TraceImportance
from ccapo_client.swaps import ModelSwap

logger = logging.getLogger(__name__)

# Failures of one part that another try may not meet: the server's deadline passed (504), its queue stayed
# full or it was not ready through the client's own retries, no answer within the client's timeout
# (TimeoutError), no server reachable (ConnectionError).
TRANSIENT = (DeadlineExceededError, QueueFullError, NotReadyError, TimeoutError, ConnectionError)


class RemoteScorer:
    """Scores traces on one or several scoring servers, with the in-process `Scorer.score()` contract.

    Inputs over the server's `max_traces_per_request` are split into several requests, sent
    `max_concurrency` at a time (so the server can batch them together, and several servers share
    them) and joined back in order. A part that fails for a passing reason (`TRANSIENT`: past the
    server's deadline, a full queue or a server not ready through the client's own retries, no
    answer within `timeout`, a lost connection) is sent again, at most `part_retries` times, after
    the server's Retry-After or an exponential backoff with jitter (the client's `backoff` and
    `max_backoff`). When some parts still fail, `PartialScoreError` carries the others' results;
    when all fail, the first part's error is raised. A bad trace raises `InvalidRequestError`, a
    ValueError whose `trace_index` is the trace's index in the caller's list, as `ccapo.TraceError` does.
    `client_kwargs` go to `Client` (timeout, max_retries, admin_key, ...).
    """

    def __init__(
        self,
        url_or_urls: str | Sequence[str],
        api_key: str | None = None,
        *,
        max_concurrency: int = 4,
        part_retries: int = 2,
        **client_kwargs: Any,
    ):
        self._attach(Client(url_or_urls, api_key=api_key, **client_kwargs), max_concurrency, part_retries)

    def _attach(self, client: _BaseClient, max_concurrency: int, part_retries: int = 2) -> None:
        """Score through `client`: the HTTP `Client`, or `RayScorer`'s client over a deployment handle."""
        if part_retries < 0:
            raise ValueError(f"part_retries is {part_retries}; give 0 (no retries) or more")
        self.client = client
        self.max_concurrency = max_concurrency
        self.part_retries = part_retries
        self.last_model_version: str | None = None
        self._info: ModelInfo | None = None  # the server's limits, fetched on first use

    def score(self, traces: Sequence[Payload], config: Payload | None = None) -> list[TraceImportance]:
        """Score traces (dicts or `ccapo.Trace`s); results align with `traces`."""
        traces = list(traces)
        if not traces:
            return []
        size = self._request_size()
        starts = range(0, len(traces), size)
        with ThreadPoolExecutor(min(len(starts), self.max_concurrency)) as pool:
            outcomes = list(pool.map(lambda start: self._score_retried(traces, start, size, config), starts))
        failures = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
        for failure in failures:
            if isinstance(failure, ValueError) and getattr(failure, "trace_index", None) is not None:
                raise failure  # a bad trace: the caller drops it and scores the rest again
        if len(failures) == len(outcomes):
            raise failures[0]
        responses = [outcome for outcome in outcomes if isinstance(outcome, ScoreResponse)]
        versions = list(dict.fromkeys(r.model.version for r in responses))
        if len(versions) > 1:  # a load_model() between the parts of a split call; the last part's version is kept
            logger.warning("the model changed during one score() call: parts were scored by versions %s", versions)
        self.last_model_version = versions[-1]
        results: list[TraceImportance | None] = []
        errors: dict[int, Exception] = {}
        for start, outcome in zip(starts, outcomes, strict=True):
            count = min(size, len(traces) - start)
            if isinstance(outcome, Exception):
                results += [None] * count
                errors.update((start + i, outcome) for i in range(count))
            else:
                results += outcome.results
        if errors:
            raise PartialScoreError(results, errors)
        return results  # type: ignore[return-value]  # no part failed: no None left

    def model_info(self) -> ModelInfo:
        self._info = self.client.model_info()
        return self._info

    def load_model(self, path: str) -> ModelInfo:
        """Have every server load the checkpoint at `path` (a path on the servers' side)."""
        self._info = self.client.load_model(path)
        return self._info

    def swap_model(self, path: str, wait_s: float = 30.0) -> ModelSwap:
        """`load_model` that waits at most `wait_s` seconds: a slower load is a "pending" swap, not an error
        (see `Client.swap_model`)."""
        swap = self.client.swap_model(path, wait_s)
        self._info = swap.model or self._info
        return swap

    def swap_status(self, swap: ModelSwap, wait_s: float = 0.0) -> ModelSwap:
        """Look again at a pending swap from `swap_model`."""
        swap = self.client.swap_status(swap, wait_s)
        self._info = swap.model or self._info
        return swap

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> RemoteScorer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request_size(self) -> int:
        limit = (self._info or self.model_info()).limits.get("max_traces_per_request")
        return int(limit) if limit else 1 << 30  # a server without the limit takes any number

    def _score_retried(
        self, traces: list[Payload], start: int, size: int, config: Payload | None
    ) -> ScoreResponse | Exception:
        """One part's response, or its last error once it is not worth another try."""
        for attempt in range(self.part_retries + 1):
            try:
                return self._score_part(traces, start, size, config)
            except Exception as err:
                if attempt == self.part_retries or not isinstance(err, TRANSIENT):
                    return err
                delay = self._part_backoff(attempt, err)
                logger.info("traces %d+ failed (%s); sending them again in %.2fs", start, err, delay)
                time.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns")

    def _part_backoff(self, attempt: int, err: Exception) -> float:
        servers = self.client._servers
        asked = getattr(err, "retry_after", None)
        ceiling = servers.backoff * 2**attempt
        return min(asked if asked is not None else random.uniform(ceiling / 2, ceiling), servers.max_backoff)

    def _score_part(self, traces: list[Payload], start: int, size: int, config: Payload | None) -> ScoreResponse:
        try:
            return self.client.score(traces[start : start + size], config)
        except ApiError as err:
            if err.trace_index is None or start == 0:
                raise
            # Name the trace by its index in the caller's list, not in this part of it.
            raise type(err)(err.status, err.type, err.message, err.trace_index + start) from err
