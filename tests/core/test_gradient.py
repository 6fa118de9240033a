"""The gradient estimator against numerical directional derivatives of the reference's log-prob.

Its drops are first-order Taylor terms, so the ground truth is the derivative along the same
direction: the reference (`ccapo.reference.answer_logprob`) evaluated on inputs moved a little
towards the intervention and back (central differences on float64 models). A wrong sign, wrong
span positions or rows mixed up in a batch all fail here.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from tiny_models import TINY, tiny_model
from transformers import Qwen2Config, Qwen2ForCausalLM

from ccapo import Scorer, ScoringConfig, Trace, TraceError, reference
from ccapo import gradient as gradient_module
from ccapo.gradient import GradientUnsupportedError, gradient_scores
from ccapo.gsm import gsm_traces
from ccapo.interventions import INTERVENTIONS
from ccapo.jobs import EngineJob

# The reference takes its log-softmax in float32 (~1e-5 absolute on S): steps this wide keep that
# rounding, divided by the step, small, and Richardson extrapolation cancels the O(STEP^2) error.
STEP = 0.05
TOLERANCE = dict(rel=1e-3, abs=3e-4)


def never(_: int) -> bool:
    return False


@pytest.fixture(scope="module")
def tokenizer(smollm_tokenizer):
    """SmolLM2's vocabulary: the sign-and-size check below holds for the random models it seeds."""
    return smollm_tokenizer


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model(request: pytest.FixtureRequest, tokenizer):
    return tiny_model(request.param, len(tokenizer))


@pytest.fixture(scope="module")
def llama(smollm_llama):
    return smollm_llama


@pytest.fixture(scope="module")
def model64(model):
    return copy.deepcopy(model).double()


def jobs_for(model, tokenizer, intervention: str, n: int = 3) -> list[EngineJob]:
    traces = [*gsm_traces(n - 1, seed=2), Trace(prompt="Add.", completion="2 + 2 = 4. It is 4.\n#### 4")]
    config = ScoringConfig(intervention=intervention, segmenter="sentence", min_span_tokens=2, estimator="gradient")
    jobs = [p.job for p in Scorer(model, tokenizer).prepare(traces, config) if p.job is not None]
    assert len(jobs) == n and all(len(job.spans) >= 2 for job in jobs)
    assert len({len(job.ids) for job in jobs}) == n  # rows of different lengths share the batch
    return jobs


def drops(scores) -> list[float]:
    return [scores.base_logprob - masked for masked in scores.masked_logprobs]


def derivative(at) -> float:
    """d/dt at(t) at t = 0: central differences at STEP and 2 * STEP, Richardson-extrapolated."""
    central = [(at(h) - at(-h)) / (2 * h) for h in (STEP, 2 * STEP)]
    return (4 * central[0] - central[1]) / 3


def pad_derivative(model, job: EngineJob, span: tuple[int, int]) -> float:
    """d/dt of S with the span's embeddings at e + t (e - e_placeholder), at t = 0."""
    embeddings = model.get_input_embeddings()
    placeholder = embeddings.weight[job.placeholder].detach()
    start, end = span

    def at(t: float) -> float:
        def move(_module, _inputs, out):
            out = out.clone()
            out[:, start:end] += t * (out[:, start:end] - placeholder)
            return out

        handle = embeddings.register_forward_hook(move)
        try:
            return reference.answer_logprob(model, job.ids, job.answer_start, None)
        finally:
            handle.remove()

    return derivative(at)


def gate_derivative(model, job: EngineJob, span: tuple[int, int], monkeypatch) -> float:
    """d/db of S with bias b on the attention logits of every later query to the span's keys, at b = 0."""

    def at(bias: float) -> float:
        def gated_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
            causal = torch.ones(allowed.shape[-2:], dtype=torch.bool).tril()
            mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(causal & ~allowed, bias)
            return mask.masked_fill(~causal, torch.finfo(dtype).min)[:, None]

        monkeypatch.setattr(reference, "additive_mask", gated_mask)
        return reference.answer_logprob(model, job.ids, job.answer_start, span)

    return derivative(at)


def test_pad_estimate_is_the_directional_derivative(model64, tokenizer):
    jobs = jobs_for(model64, tokenizer, "pad")
    estimates = gradient_scores(model64, jobs, never)  # all rows in one batch
    for job, scores in zip(jobs, estimates, strict=True):
        expected = [pad_derivative(model64, job, span) for span in job.spans]
        assert drops(scores) == pytest.approx(expected, **TOLERANCE)
        assert scores.base_logprob == pytest.approx(reference.answer_logprob(model64, job.ids, job.answer_start, None))


@pytest.mark.parametrize("intervention", ["attention", "delete"])
def test_gated_estimate_is_the_derivative_of_the_attention_gate(model64, tokenizer, intervention, monkeypatch):
    jobs = jobs_for(model64, tokenizer, intervention)
    estimates = gradient_scores(model64, jobs, never)
    for job, scores in zip(jobs, estimates, strict=True):
        expected = [gate_derivative(model64, job, span, monkeypatch) for span in job.spans]
        assert drops(scores) == pytest.approx(expected, **TOLERANCE)


def test_gate_estimate_has_the_sign_and_rough_size_of_exact_drops(model64, tokenizer):
    """The gate's first-order term against the reference's exact attention drops: on a random tiny
    model hiding a span changes the answer a little, so the two agree closely."""
    jobs = jobs_for(model64, tokenizer, "attention")
    for estimate, exact in zip(
        gradient_scores(model64, jobs, never), reference.reference_score(model64, jobs), strict=True
    ):
        big = [(e, x) for e, x in zip(drops(estimate), drops(exact), strict=True) if abs(x) > 1e-3]
        assert big and all(e * x > 0 for e, x in big)
        assert torch.corrcoef(torch.tensor(big).T)[0, 1] > 0.9


@pytest.mark.parametrize("intervention", INTERVENTIONS)
def test_batched_equals_one_job_at_a_time(model, tokenizer, intervention):
    jobs = jobs_for(model, tokenizer, intervention)
    together = gradient_scores(model, jobs, never, max_batch_tokens=100_000)
    alone = [gradient_scores(model, [job], never)[0] for job in jobs]
    for a, b in zip(together, alone, strict=True):
        assert a.base_logprob == pytest.approx(b.base_logprob, abs=1e-4)
        assert a.masked_logprobs == pytest.approx(b.masked_logprobs, abs=1e-4)
        assert a.exact == [False] * len(a.masked_logprobs)


def test_recomputed_layers_give_the_same_estimates(llama, tokenizer, monkeypatch):
    jobs = jobs_for(llama, tokenizer, "delete")
    kept = gradient_scores(llama, jobs, never)
    monkeypatch.setattr(gradient_module, "SAVED_ATTENTION_BYTES", 0)
    recomputed = gradient_scores(llama, jobs, never)
    for a, b in zip(kept, recomputed, strict=True):
        assert a.masked_logprobs == pytest.approx(b.masked_logprobs, abs=1e-5)
    assert all("forward" not in layer.__dict__ for layer in llama.get_decoder().layers)


def test_parameters_keep_no_grad_and_the_mode_is_restored(tokenizer):
    policy = tiny_model("qwen2", len(tokenizer)).train()
    jobs = jobs_for(policy, tokenizer, "delete") + jobs_for(policy, tokenizer, "pad")
    with torch.inference_mode():  # a caller inside inference mode still gets its gradients
        scores = gradient_scores(policy, jobs, never)
    assert all(s is not None for s in scores)
    assert policy.training
    assert all(p.requires_grad and p.grad is None for p in policy.parameters())
    policy.eval()
    gradient_scores(policy, jobs[:1], never)
    assert not policy.training


def test_scorer_returns_estimated_spans_and_token_weights(llama, tokenizer):
    scorer = Scorer(llama, tokenizer)
    traces = gsm_traces(2, seed=4)
    batch = scorer.score_batch(traces, ScoringConfig(estimator="gradient", segmenter="sentence"))
    exact = scorer.score(traces, ScoringConfig(segmenter="sentence"))
    for result, reference_result in zip(batch.results, exact, strict=True):
        assert result.ok and result.spans
        assert all(not span.exact for span in result.spans)
        assert len(result.token_weights) == len(result.tokens)
        assert result.token_weights != [1.0] * len(result.tokens)
        assert result.base_logprob == pytest.approx(reference_result.base_logprob, abs=1e-4)
        assert [s.token_start for s in result.spans] == [s.token_start for s in reference_result.spans]
    jobs = [p.job for p in scorer.prepare(traces, ScoringConfig(estimator="gradient", segmenter="sentence"))]
    assert batch.usage.forward_tokens == sum(job.feed_tokens for job in jobs) == sum(len(job.ids) for job in jobs)


def test_cancelled_jobs_get_none_and_the_rest_are_unchanged(llama, tokenizer):
    jobs = jobs_for(llama, tokenizer, "attention")
    heard: list[tuple[int, int]] = []
    full = gradient_scores(llama, jobs, never, max_batch_tokens=1)  # one job per pass
    partial = gradient_scores(llama, jobs, lambda i: i == 1, lambda done, total: heard.append((done, total)), 1)
    assert partial[1] is None
    assert partial[0] == full[0] and partial[2] == full[2]
    assert heard == [(1, 3), (2, 3), (3, 3)]


def test_sliding_window_models_take_pad_but_refuse_the_gate_past_their_window(tokenizer):
    config = Qwen2Config(
        vocab_size=len(tokenizer), use_sliding_window=True, sliding_window=8, max_window_layers=0, **TINY
    )
    torch.manual_seed(0)
    sliding = Qwen2ForCausalLM(config).double().eval()
    assert "sliding_attention" in sliding.config.layer_types
    with pytest.raises(TraceError, match=r"trace 0: .*sliding window"):  # refused alone, when prepared
        jobs_for(sliding, tokenizer, "delete")
    job = jobs_for(sliding, tokenizer, "pad")[0]
    with pytest.raises(GradientUnsupportedError, match="sliding window"):
        gradient_scores(sliding, [replace(job, intervention="delete")], never)
    (scores,) = gradient_scores(sliding, [job], never)
    expected = [pad_derivative(sliding, job, span) for span in job.spans]
    assert drops(scores) == pytest.approx(expected, **TOLERANCE)


def test_gated_batches_keep_their_saved_attention_within_the_bound(llama, tokenizer, monkeypatch):
    jobs = jobs_for(llama, tokenizer, "delete") + jobs_for(llama, tokenizer, "pad")
    one_row = gradient_module._saved_attention_bytes(llama, 1, max(len(job.ids) for job in jobs))
    monkeypatch.setattr(gradient_module, "SAVED_ATTENTION_BYTES", one_row)
    batches = list(gradient_module._batches(llama, jobs, 100_000))
    assert [len(batch) for batch in batches] == [1, 1, 1, 3]  # gated jobs one by one, pad jobs together
    assert all(jobs[i].intervention == "pad" for i in batches[-1])
