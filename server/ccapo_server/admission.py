"""Admission: prepare a request within its deadline, cost it, and refuse what the server will not carry.

Preparing (tokenizing, segmenting) runs in at most `prepare_threads` threads at once, trace by
trace, and stops as soon as the request is gone (deadline passed, client away). What each trace
costs is then known exactly (`PreparedTrace.feed_tokens`, `counterfactuals`) and is bounded per
trace and per request; an over-budget request gets a 422 that says what to reduce.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ccapo import PreparedTrace, Scorer, ScoringConfig, Trace, TraceError
from ccapo_server.errors import ApiError
from ccapo_server.settings import ServerSettings
from ccapo_server.threads import in_daemon_thread
from ccapo_server.tickets import Ticket


class Gone(Exception):
    """The request was abandoned while it was being prepared; nobody waits for its answer."""


class Admission:
    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self._slots = asyncio.Semaphore(settings.prepare_threads)

    async def prepare(self, scorer: Scorer, ticket: Ticket) -> list[PreparedTrace]:
        """The request's prepared traces; raises `ApiError` for a bad or over-budget request, `Gone`."""
        self.check_token_ids(ticket.traces)
        async with self._slots:
            if ticket.gone:
                raise Gone
            return await in_daemon_thread("ccapo-prepare", lambda: self._prepare(scorer, ticket))

    def check_token_ids(self, traces: Sequence[Trace]) -> None:
        """Token-id traces over the length limit are refused before any work."""
        for index, trace in enumerate(traces):
            if trace.prompt_ids is not None and trace.completion_ids is not None:
                self._check_length(index, len(trace.prompt_ids) + len(trace.completion_ids))

    def prepare_again(self, scorer: Scorer, ticket: Ticket, index: int) -> PreparedTrace:
        """One queued trace under a newly swapped-in model (tokenization and vocabulary may differ)."""
        return self._prepare_one(scorer, ticket.traces[index], ticket.config, index)

    def _prepare(self, scorer: Scorer, ticket: Ticket) -> list[PreparedTrace]:
        """In a preparation thread: trace by trace, so that a gone request stops within one trace."""
        _check_placeholder(scorer, ticket.config)
        prepared: list[PreparedTrace] = []
        total = 0
        limit = self.settings.max_feed_tokens_per_request
        for index, trace in enumerate(ticket.traces):
            if ticket.gone:
                raise Gone
            prepared.append(self._prepare_one(scorer, trace, ticket.config, index))
            total += prepared[-1].feed_tokens
            if total > limit:
                raise ApiError(
                    "invalid_request",
                    f"traces: scoring traces 0..{index} alone would feed {total} tokens through the model, over "
                    f"this server's limit of {limit} per request (CCAPO_MAX_FEED_TOKENS_PER_REQUEST); send fewer "
                    f"traces per request, {_cheaper(ticket.config)}probe fewer spans (config.max_spans) or send "
                    "shorter traces",
                )
        return prepared

    def _prepare_one(self, scorer: Scorer, trace: Trace, config: ScoringConfig, index: int) -> PreparedTrace:
        try:
            [prepared] = scorer.prepare([trace], config)
        except TraceError as err:  # raised as trace 0 of a one-trace call: name its place in the request
            raise ApiError.from_trace_error(TraceError(index, err.detail)) from None
        self._check_length(index, len(prepared.job.ids) if prepared.job is not None else len(prepared.tokens))
        settings = self.settings
        if prepared.counterfactuals > settings.max_counterfactuals_per_trace:
            raise _trace_error(
                index,
                f"it has {prepared.counterfactuals} spans to probe, over this server's limit of "
                f"{settings.max_counterfactuals_per_trace} per trace (CCAPO_MAX_COUNTERFACTUALS_PER_TRACE); lower "
                "config.max_spans or send fewer spans",
            )
        if prepared.feed_tokens > settings.max_feed_tokens_per_trace:
            raise _trace_error(
                index,
                f"scoring it would feed {prepared.feed_tokens} tokens through the model, over this server's limit "
                f"of {settings.max_feed_tokens_per_trace} per trace (CCAPO_MAX_FEED_TOKENS_PER_TRACE); "
                f"{_cheaper(config)}probe fewer spans (config.max_spans) or shorten it",
            )
        return prepared

    def _check_length(self, index: int, tokens: int) -> None:
        if tokens > self.settings.max_tokens_per_trace:
            raise _trace_error(
                index,
                f"the model would read {tokens} tokens for this trace, over this server's limit of "
                f"{self.settings.max_tokens_per_trace} (CCAPO_MAX_TOKENS_PER_TRACE); shorten it",
            )


def _check_placeholder(scorer: Scorer, config: ScoringConfig) -> None:
    """A placeholder the tokenizer cannot use is the request's config error, not a trace's."""
    try:
        scorer.placeholder_id(config.placeholder)
    except ValueError as err:
        raise ApiError("invalid_request", f"config.placeholder: {err}") from None


def _cheaper(config: ScoringConfig) -> str:
    """The estimator advice for an over-budget trace: horizon feeds a window per span, not the whole suffix."""
    if config.estimator == "horizon":
        return "lower config.horizon_window or config.horizon_verify, "
    return 'score it with config.estimator "horizon" (a window per span instead of the whole suffix), '


def _trace_error(index: int, message: str) -> ApiError:
    return ApiError.from_trace_error(TraceError(index, message))
