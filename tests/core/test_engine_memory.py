"""The engine's memory budget: where it comes from, and that the paths it forces stay exact."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from ccapo import Scorer, ScoringConfig, Trace, engine
from ccapo.engine import Engine
from ccapo.gsm import gsm_symbolic_problems, math_prompt
from ccapo.interventions import INTERVENTIONS
from ccapo.jobs import EngineJob
from ccapo.memory import MEMORY_SHARE, TokenCosts, available_memory
from ccapo.reference import reference_score

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def tokenizer(smollm_tokenizer):
    """SmolLM2's tokenizer: the traces' lengths, and so the budgets below, are counted in its tokens."""
    return smollm_tokenizer


@pytest.fixture(scope="module")
def llama(smollm_llama):
    return smollm_llama


def long_jobs(scorer: Scorer, config: ScoringConfig, solutions: tuple[int, ...]) -> list[EngineJob]:
    """One trace per count: that many gsm_symbolic gold solutions chained into one long completion."""
    problems = gsm_symbolic_problems(max(solutions), seed=4)
    traces = []
    for n in solutions:
        steps = "\n\n".join(p.solution.rsplit("####", 1)[0].strip() for p in problems[:n])
        traces.append(
            Trace(prompt=math_prompt(problems[0].question), completion=f"{steps}\n#### {problems[n - 1].answer}")
        )
    return [p.job for p in scorer.prepare(traces, config) if p.job is not None]


@pytest.mark.parametrize("intervention", INTERVENTIONS)
def test_a_tight_budget_chunks_every_pass_and_matches_the_reference(llama, tokenizer, intervention):
    """~900-token traces under 2 MiB: two jobs per group, one row per pass, every row fed in chunks."""
    scorer = Scorer(llama, tokenizer)
    config = ScoringConfig(intervention=intervention, segmenter="sentence", max_spans=4, min_span_tokens=2)
    jobs = long_jobs(scorer, config, (11, 10, 9))
    assert len(jobs) == 3 and min(len(job.ids) for job in jobs) > 800 and max(len(job.ids) for job in jobs) < 1000
    budget = 2 << 20
    fast_engine = Engine(llama, max_batch_tokens=4096, memory_bytes=budget)
    assert 2 * len(jobs[0].ids) <= fast_engine.cached_tokens_budget(budget) < 3 * len(jobs[2].ids)
    fed: list[tuple[int, int]] = []
    hook = fast_engine.decoder.register_forward_hook(
        lambda _m, _a, kw, _o: fed.append(kw["input_ids"].shape), with_kwargs=True
    )
    try:
        fast = fast_engine.score(jobs)
    finally:
        hook.remove()

    slow = reference_score(llama, jobs)
    for f, s in zip(fast, slow, strict=True):
        assert f.base_logprob == pytest.approx(s.base_logprob, abs=TOLERANCE)
        assert f.masked_logprobs == pytest.approx(s.masked_logprobs, abs=TOLERANCE)
    assert all(rows == 1 for rows, _ in fed)  # the gathered prefixes leave room for one row at a time
    assert max(width for _, width in fed) < min(len(job.ids) for job in jobs)  # base passes too are chunked
    assert sum(width for _, width in fed) == sum(s.forward_tokens for s in fast)  # chunks feed nothing twice
    assert 0 < fast_engine.peak_estimate_bytes <= budget


def test_a_large_budget_keeps_results_and_passes_whole(llama, tokenizer):
    """With room to spare nothing is chunked: one base pass per group, the same scores as a tight budget."""
    scorer = Scorer(llama, tokenizer)
    config = ScoringConfig(segmenter="sentence", max_spans=3, min_span_tokens=2)
    jobs = long_jobs(scorer, config, (6, 4))
    roomy, tight = Engine(llama, memory_bytes=1 << 30), Engine(llama, memory_bytes=2 << 20)
    widths: list[int] = []
    hook = roomy.decoder.register_forward_hook(
        lambda _m, _a, kw, _o: widths.append(kw["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        whole = roomy.score(jobs)
    finally:
        hook.remove()
    assert widths[0] == len(jobs[0].ids)  # both traces' base passes in one unchunked batch
    for a, b in zip(whole, tight.score(jobs), strict=True):
        assert a.base_logprob == pytest.approx(b.base_logprob, abs=TOLERANCE)
        assert a.masked_logprobs == pytest.approx(b.masked_logprobs, abs=TOLERANCE)
        assert a.forward_tokens == b.forward_tokens


def test_the_budget_follows_the_memory_available(llama, tokenizer, monkeypatch):
    monkeypatch.setattr(engine, "available_memory", lambda device: 64 << 20)
    kv = TokenCosts.of(llama).kv
    adaptive = Engine(llama)
    assert adaptive.memory_budget() == int(MEMORY_SHARE * (64 << 20))
    assert adaptive.cached_tokens_budget(adaptive.memory_budget()) == adaptive.memory_budget() // 2 // kv
    monkeypatch.setattr(engine, "available_memory", lambda device: 16 << 20)
    assert adaptive.memory_budget() == int(MEMORY_SHARE * (16 << 20))  # read again at every call
    assert Engine(llama, memory_bytes=5 << 20).memory_budget() == 5 << 20  # the overrides win
    assert Engine(llama, max_cached_tokens=300).cached_tokens_budget(1 << 30) == 300
    assert Scorer(llama, tokenizer, memory_bytes=7 << 20).engine.memory_budget() == 7 << 20


def test_kv_cost_is_what_the_cache_holds(llama):
    """TokenCosts.kv is the bytes per position of a real base pass's cache, in the model's dtype."""
    for model in (llama, copy.deepcopy(llama).to(torch.bfloat16)):
        with torch.inference_mode():
            cache = model.get_decoder()(input_ids=torch.arange(10)[None], use_cache=True).cache
        stored = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
        assert TokenCosts.of(model).kv == stored // 10


def test_available_memory_is_within_the_machine():
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        pytest.skip("needs Linux's /proc/meminfo")
    total = next(
        int(line.split()[1]) * 1024 for line in meminfo.read_text().splitlines() if line.startswith("MemTotal:")
    )
    assert 0 < available_memory(torch.device("cpu")) <= total
