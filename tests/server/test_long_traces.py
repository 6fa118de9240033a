"""A default server admits the long traces the long-reasoning page is about (2k-16k tokens), and refuses
what is over its budget with an error that names the setting to raise and the cheaper estimator.

Admission only (tokenizing, segmenting and costing, no model work), through the path every request
takes, on a tiny llama whose context holds 16k tokens: about a second in all.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from ccapo_server.admission import Admission
from ccapo_server.errors import ApiError
from ccapo_server.settings import ServerSettings
from ccapo_server.tickets import Ticket
from tiny_models import TINY
from transformers import LlamaConfig, LlamaForCausalLM

from ccapo import PreparedTrace, Scorer, ScoringConfig, Trace

ANSWER = "\n#### 7"


@pytest.fixture(scope="module")
def long_context_scorer(tokenizer) -> Scorer:
    config = LlamaConfig(vocab_size=len(tokenizer), **{**TINY, "max_position_embeddings": 32768})
    return Scorer(LlamaForCausalLM(config).eval(), tokenizer)


def long_trace(tokenizer, tokens: int, spans: int) -> Trace:
    """A token-id trace of about `tokens` completion tokens, its reasoning cut into `spans` even spans."""
    word = tokenizer(" seven", add_special_tokens=False).input_ids
    answer = tokenizer(ANSWER, add_special_tokens=False).input_ids
    reasoning = (word * tokens)[: tokens - len(answer)]
    step = len(reasoning) // spans
    return Trace(
        prompt_ids=tokenizer("What is 3 + 4?").input_ids,
        completion_ids=reasoning + answer,
        spans=[(k * step, k * step + 8) for k in range(spans)],
    )


def admit(scorer: Scorer, trace: Trace, config: ScoringConfig) -> PreparedTrace:
    async def prepare() -> list[PreparedTrace]:
        ticket = Ticket([trace], config, time.monotonic() + 60, asyncio.get_running_loop().create_future())
        return await Admission(ServerSettings()).prepare(scorer, ticket)

    (prepared,) = asyncio.run(prepare())
    return prepared


def test_a_4k_trace_with_40_spans_is_admitted_exactly(long_context_scorer, tokenizer):
    prepared = admit(long_context_scorer, long_trace(tokenizer, 4096, 40), ScoringConfig())
    assert prepared.counterfactuals == 40
    assert prepared.feed_tokens > 16384 * 4  # far over the per-trace budget of the first release


def test_a_16k_trace_with_64_spans_is_admitted_under_horizon(long_context_scorer, tokenizer):
    trace = long_trace(tokenizer, 16384 - 16, 64)  # the prompt's tokens count too
    config = ScoringConfig(estimator="horizon", horizon_verify=2)
    assert admit(long_context_scorer, trace, config).counterfactuals == 64


def test_an_over_budget_trace_is_refused_naming_the_setting_and_the_cheaper_estimator(long_context_scorer, tokenizer):
    with pytest.raises(ApiError) as refused:
        admit(long_context_scorer, long_trace(tokenizer, 16000, 64), ScoringConfig())  # exact: ~0.5M feed tokens
    message = str(refused.value)
    assert "CCAPO_MAX_FEED_TOKENS_PER_TRACE" in message and 'config.estimator "horizon"' in message
    with pytest.raises(ApiError, match="CCAPO_MAX_TOKENS_PER_TRACE"):
        admit(long_context_scorer, long_trace(tokenizer, 20000, 8), ScoringConfig(estimator="horizon"))
