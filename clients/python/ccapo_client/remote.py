"""`RemoteScorer`: `ccapo.Scorer.score()` over HTTP, so a trainer swaps one for the other with one setting."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ccapo_client.client import Client, Payload, _BaseClient
from ccapo_client.errors import ApiError
from ccapo_client.models import ModelInfo, ScoreResponse, TraceImportance
from ccapo_client.swaps import ModelSwap

logger = logging.getLogger(__name__)


class RemoteScorer:
    """Scores traces on one or several scoring servers, with the in-process `Scorer.score()` contract.

    Inputs over the server's `max_traces_per_request` are split into several requests, sent
    `max_concurrency` at a time (so the server can batch them together, and several servers share
    them) and joined back in order. A bad trace raises `InvalidRequestError`, a ValueError whose
    `trace_index` is the trace's index in the caller's list, as `ccapo.TraceError` does.
    `client_kwargs` go to `Client` (timeout, max_retries, admin_key, ...).
    """

    def __init__(
        self,
        url_or_urls: str | Sequence[str],
        api_key: str | None = None,
        *,
        max_concurrency: int = 4,
        **client_kwargs: Any,
    ):
        self._attach(Client(url_or_urls, api_key=api_key, **client_kwargs), max_concurrency)

    def _attach(self, client: _BaseClient, max_concurrency: int) -> None:
        """Score through `client`: the HTTP `Client`, or `RayScorer`'s client over a deployment handle."""
        self.client = client
        self.max_concurrency = max_concurrency
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
            responses = list(pool.map(lambda start: self._score_part(traces, start, size, config), starts))
        versions = list(dict.fromkeys(r.model.version for r in responses))
        if len(versions) > 1:  # a load_model() between the parts of a split call; the last part's version is kept
            logger.warning("the model changed during one score() call: parts were scored by versions %s", versions)
        self.last_model_version = versions[-1]
        return [result for response in responses for result in response.results]

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

    def _score_part(self, traces: list[Payload], start: int, size: int, config: Payload | None) -> ScoreResponse:
        try:
            return self.client.score(traces[start : start + size], config)
        except ApiError as err:
            if err.trace_index is None or start == 0:
                raise
            # Name the trace by its index in the caller's list, not in this part of it.
            raise type(err)(err.status, err.type, err.message, err.trace_index + start) from err
