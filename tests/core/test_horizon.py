"""The horizon estimator against the naive reference: exact where nothing is stale, and where the
stale keys and values are exact anyway (a one-layer model: its keys depend on the token and its
rotated position only), so the RoPE rotation of reused keys is held to 1e-4."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tiny_models import TINY
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from ccapo import Scorer, ScoringConfig, kernels
from ccapo.gsm import gsm_traces
from ccapo.reference import reference_score
from ccapo.scorer import TraceError

TOLERANCE = 1e-4


def horizon_against_reference(scorer: Scorer, intervention: str, window: int, verify: int = 0, tail: int = 0):
    config = ScoringConfig(
        intervention=intervention,
        segmenter="window",
        window_tokens=8,
        min_span_tokens=2,
        estimator="horizon",
        horizon_window=window,
        horizon_verify=verify,
        horizon_tail=tail,
    )
    jobs = [p.job for p in scorer.prepare(gsm_traces(2, seed=5), config) if p.job is not None]
    assert all(len(job.spans) >= 3 for job in jobs)
    estimated = scorer.compute(jobs)
    for job, scores in zip(jobs, estimated, strict=True):
        assert scores.forward_tokens <= job.feed_tokens
    return jobs, estimated, reference_score(scorer.model, jobs)


def assert_drops_equal(estimated, reference) -> None:
    for e, r in zip(estimated, reference, strict=True):
        assert e.base_logprob == pytest.approx(r.base_logprob, abs=TOLERANCE)
        assert e.masked_logprobs == pytest.approx(r.masked_logprobs, abs=TOLERANCE)


@pytest.mark.parametrize("intervention", ["delete", "pad", "attention"])
@pytest.mark.parametrize(("window", "tail"), [(100_000, 0), (0, 100_000)], ids=["window", "tail"])
def test_a_window_or_tail_over_the_whole_suffix_is_the_exact_pass(model, tokenizer, intervention, window, tail):
    scorer = Scorer(model, tokenizer)
    jobs, estimated, reference = horizon_against_reference(scorer, intervention, window, tail=tail)
    assert_drops_equal(estimated, reference)
    assert all(all(s.exact) for s in estimated)
    assert all(s.forward_tokens == job.exact_feed_tokens for job, s in zip(jobs, estimated, strict=True))


@pytest.mark.parametrize("kernel", ["merge", "fused"])
@pytest.mark.parametrize("intervention", ["delete", "pad", "attention"])
@pytest.mark.parametrize("tail", [0, 5])
def test_stale_keys_of_a_one_layer_model_are_exact_once_rotated(tokenizer, intervention, tail, kernel, monkeypatch):
    """Under `delete` the stale keys are read where they lie by rotated copies of the queries."""
    monkeypatch.setitem(kernels.DEVICE_KERNEL, "cpu", kernel)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), **{**TINY, "num_hidden_layers": 1})).eval()
    jobs, estimated, reference = horizon_against_reference(Scorer(model, tokenizer), intervention, 0, tail=tail)
    assert_drops_equal(estimated, reference)
    assert not all(all(s.exact) for s in estimated)  # rows reused stale keys, and were not flagged exact
    assert all(s.forward_tokens < job.exact_feed_tokens for job, s in zip(jobs, estimated, strict=True))


def test_verified_spans_carry_exact_drops(llama, tokenizer):
    scorer = Scorer(llama, tokenizer)
    _, windowed, reference = horizon_against_reference(scorer, "delete", 0)
    jobs, verified, _ = horizon_against_reference(scorer, "delete", 0, verify=2)
    for job, w, v, r in zip(jobs, windowed, verified, reference, strict=True):
        newly = [k for k in range(len(job.spans)) if v.exact[k] and not w.exact[k]]
        assert len(newly) == 2
        drops = [abs(w.base_logprob - m) for m in w.masked_logprobs]
        assert min(drops[k] for k in newly) >= max(d for k, d in enumerate(drops) if not v.exact[k])
        for k, (estimate, exact) in enumerate(zip(v.masked_logprobs, r.masked_logprobs, strict=True)):
            if v.exact[k]:
                assert estimate == pytest.approx(exact, abs=TOLERANCE)
            else:
                assert estimate == w.masked_logprobs[k]


@pytest.mark.parametrize("kernel", ["merge", "fused"])
def test_a_span_that_ends_where_the_answer_starts_is_exact_under_attention(model, tokenizer, kernel, monkeypatch):
    """Its last token is the row's first query, which still sees the span while the answer does not."""
    monkeypatch.setitem(kernels.DEVICE_KERNEL, "cpu", kernel)
    scorer = Scorer(model, tokenizer)
    config = ScoringConfig(intervention="attention", estimator="horizon", horizon_window=0, segmenter="sentence")
    (prepared,) = scorer.prepare(gsm_traces(1, seed=5), config)
    last = prepared.job.answer_start
    job = replace(prepared.job, spans=[(last - 12, last - 6), (last - 6, last)])
    (estimated,) = scorer.compute([job])
    (reference,) = reference_score(scorer.model, [job])
    assert estimated.exact == [False, True]
    assert estimated.masked_logprobs[-1] == pytest.approx(reference.masked_logprobs[-1], abs=TOLERANCE)


def test_a_model_row_attention_cannot_run_is_refused_when_prepared(tokenizer):
    config = Qwen2Config(vocab_size=len(tokenizer), **{**TINY, "use_sliding_window": True, "sliding_window": 64})
    scorer = Scorer(Qwen2ForCausalLM(config).eval(), tokenizer)
    with pytest.raises(TraceError, match="sliding-window"):
        scorer.prepare(gsm_traces(1, seed=5), ScoringConfig(estimator="horizon", segmenter="sentence"))
