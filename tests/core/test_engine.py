"""The fast engine against the naive reference: equal drops (1e-4, fp32) for every layout."""

from __future__ import annotations

import pytest
import torch

from ccapo import Scorer, ScoringConfig, Trace
from ccapo.engine import Engine
from ccapo.gsm import gsm_traces
from ccapo.interventions import INTERVENTIONS
from ccapo.reference import reference_score

TOLERANCE = 1e-4
SOLUTION = "First, 3 + 4 = 7 apples.\nThen 7 × 2 = 14 apples.\nI will check the work once.\nSo 14 - 5 = 9.\n#### 9"


def assert_engine_matches_reference(
    scorer: Scorer, traces: list[Trace], config: ScoringConfig, budgets: tuple[int, ...]
) -> None:
    """The engine at each batch budget against one reference run (the reference is the costly part)."""
    jobs = [p.job for p in scorer.prepare(traces, config) if p.job is not None]
    assert jobs and any(job.spans for job in jobs)
    slow = reference_score(scorer.model, jobs)
    for budget in budgets:
        fast = Engine(scorer.model, max_batch_tokens=budget).score(jobs)
        for f, s in zip(fast, slow, strict=True):
            assert f.base_logprob == pytest.approx(s.base_logprob, abs=TOLERANCE), budget
            assert f.masked_logprobs == pytest.approx(s.masked_logprobs, abs=TOLERANCE), budget


def layout_traces(tokenizer) -> list[Trace]:
    """Awkward span layouts as token-id traces: spans are completion-token ranges."""
    prompt = tokenizer("Q: apples?", add_special_tokens=False).input_ids
    ids = tokenizer(SOLUTION, add_special_tokens=False).input_ids
    answer = len(tokenizer(SOLUTION.split("####")[0], add_special_tokens=False).input_ids)
    return [
        Trace(prompt_ids=prompt, completion_ids=ids, spans=[(0, 3)]),  # the first completion token
        Trace(prompt_ids=prompt, completion_ids=ids, spans=[(answer - 4, answer)]),  # ends right before the answer
        Trace(prompt_ids=prompt, completion_ids=ids, spans=[(2, 5), (5, 9), (9, 10)]),  # adjacent
        Trace(prompt_ids=prompt, completion_ids=ids, spans=[(0, answer)]),  # one span: the whole reasoning
        Trace(prompt_ids=prompt, completion_ids=ids, spans=[(k, k + 1) for k in range(0, answer, 2)]),  # many
        Trace(prompt_ids=prompt[:1], completion_ids=ids, spans=[(0, 1), (answer - 1, answer)]),  # 1-token prompt
    ]


@pytest.mark.parametrize("intervention", INTERVENTIONS)
def test_awkward_layouts(model, tokenizer, intervention):
    scorer = Scorer(model, tokenizer)
    assert_engine_matches_reference(scorer, layout_traces(tokenizer), ScoringConfig(intervention=intervention), (4096,))


@pytest.mark.parametrize("intervention", INTERVENTIONS)
def test_mixed_lengths_in_one_batch(model, tokenizer, intervention):
    """Real gsm_symbolic traces beside a short one, batched tightly (96 tokens: many batches) and loosely (one)."""
    traces = [*gsm_traces(3, seed=1), Trace(prompt="Add.", completion="2 + 2 = 4, so the answer is 4")]
    config = ScoringConfig(intervention=intervention, segmenter="sentence", min_span_tokens=2)
    assert_engine_matches_reference(Scorer(model, tokenizer), traces, config, (96, 100_000))


def test_drops_in_results_match_reference(llama, tokenizer):
    scorer = Scorer(llama, tokenizer)
    traces = gsm_traces(2, seed=3)
    results = scorer.score(traces)
    slow = reference_score(llama, [p.job for p in scorer.prepare(traces) if p.job])
    for result, ref in zip(results, slow, strict=True):
        assert result.base_logprob == pytest.approx(ref.base_logprob, abs=TOLERANCE)
        expected = [ref.base_logprob - m for m in ref.masked_logprobs]
        assert [s.drop for s in result.spans] == pytest.approx(expected, abs=TOLERANCE)


def test_engine_counts_only_the_tokens_it_feeds(llama, tokenizer):
    scorer = Scorer(llama, tokenizer)
    job = scorer.prepare([layout_traces(tokenizer)[2]], ScoringConfig(intervention="pad"))[0].job
    (scores,) = scorer.engine.score([job])
    suffixes = sum(len(job.ids) - start for start, _ in job.spans)
    assert scores.forward_tokens == len(job.ids) + suffixes


def test_engine_restores_training_mode(llama, tokenizer):
    scorer = Scorer(llama, tokenizer)
    llama.train()
    try:
        scorer.score(gsm_traces(1))
        assert llama.training
    finally:
        llama.eval()


def test_out_of_memory_batches_are_split_and_retried(monkeypatch):
    from ccapo import engine

    calls = []

    def run(items):
        calls.append(len(items))
        if len(items) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return torch.tensor([x * 10 for x in items])

    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    assert engine._split_on_oom(run, [1, 2, 3, 4, 5]).tolist() == [10, 20, 30, 40, 50]
    assert calls == [5, 2, 3, 1, 2]
    with pytest.raises(torch.cuda.OutOfMemoryError):
        engine._split_on_oom(lambda items: run([0, 0, 0]), [1])


def test_a_cancelled_job_stops_between_forward_passes(llama, tokenizer):
    """Cancelling one job skips its remaining passes; the other jobs' scores do not change."""
    scorer = Scorer(llama, tokenizer)
    config = ScoringConfig(intervention="pad", segmenter="sentence", min_span_tokens=2)
    jobs = [p.job for p in scorer.prepare(gsm_traces(3, seed=2), config) if p.job is not None]
    engine = Engine(llama, max_batch_tokens=96)  # a tight budget: many passes to stop between
    passes = []
    hook = engine.decoder.register_forward_hook(lambda *_: passes.append(1))
    try:
        full = engine.score(jobs)
        full_passes = len(passes)
        passes.clear()
        some = engine.score_cancellable(jobs, lambda i: i == 1)
        assert some[1] is None
        for k in (0, 2):  # other batch shapes, the same numbers
            assert some[k].base_logprob == pytest.approx(full[k].base_logprob, abs=TOLERANCE)
            assert some[k].masked_logprobs == pytest.approx(full[k].masked_logprobs, abs=TOLERANCE)
        passes.clear()
        everything = engine.score_cancellable(jobs, lambda i: len(passes) >= 2)  # gone after two passes
    finally:
        hook.remove()
    assert everything == [None, None, None]
    assert len(passes) == 2 < full_passes
    assert [job.feed_tokens for job in jobs] == [s.forward_tokens for s in full]
