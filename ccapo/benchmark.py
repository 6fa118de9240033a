"""`ccapo bench`: the fast engine against the naive reference, side by side in one run.

Efficiency compares the engine's wall time with the time a plain forward pass (`model(input_ids)`,
full logits) needs for the tokens the engine must compute anyway: each trace's base pass and, per
counterfactual, the tokens from its first changed position on. Given an approximate estimator,
it is timed on the same jobs and its drops are compared with the engine's exact ones.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace

import torch

from ccapo.agreement import Agreement, drop_agreement
from ccapo.config import ScoringConfig
from ccapo.gsm import gsm_traces
from ccapo.jobs import EngineJob, JobScores
from ccapo.reference import reference_score
from ccapo.scorer import Scorer
from ccapo.trace import Trace


@dataclass(frozen=True)
class EngineTiming:
    name: str
    seconds: float
    counterfactuals: int
    forward_tokens: int

    def traces_per_s(self, traces: int) -> float:
        return traces / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.forward_tokens / self.seconds


@dataclass(frozen=True)
class BenchResult:
    traces: int
    reference: EngineTiming | None
    engine: EngineTiming
    plain_tokens_per_s: float
    plain_shape: tuple[int, int]
    max_abs_drop_diff: float | None
    estimate: EngineTiming | None = None  # an approximate estimator on the same jobs
    agreement: Agreement | None = None  # its drops against the engine's exact ones

    @property
    def speedup(self) -> float | None:
        return self.reference.seconds / self.engine.seconds if self.reference else None

    @property
    def estimate_speedup(self) -> float | None:
        """How much faster the approximate estimator ran than the exact engine."""
        return self.engine.seconds / self.estimate.seconds if self.estimate else None

    @property
    def efficiency(self) -> float:
        return (self.engine.forward_tokens / self.plain_tokens_per_s) / self.engine.seconds


def plain_forward_throughput(scorer: Scorer, rows: int, width: int, repeats: int = 3) -> float:
    """Tokens/s of `model(input_ids)` on a dense (rows, width) batch; the median of `repeats` runs."""
    model = scorer.model
    ids = torch.randint(0, scorer.vocab_size, (rows, width), device=model.device)
    times = []
    with torch.inference_mode():
        model(input_ids=ids[:, :8])  # warm-up
        for _ in range(repeats):
            _sync(model.device)
            start = time.perf_counter()
            model(input_ids=ids)
            _sync(model.device)
            times.append(time.perf_counter() - start)
    return rows * width / statistics.median(times)


def run_benchmark(
    scorer: Scorer,
    n: int = 32,
    seed: int = 0,
    config: ScoringConfig | None = None,
    reference: bool = True,
    estimator: str = "exact",
    traces: list[Trace] | None = None,
) -> BenchResult:
    """Time the engine (and the reference, and an approximate `estimator`) on `n` gsm_symbolic traces
    (or on `traces`, where given)."""
    config = config or ScoringConfig()
    jobs = [p.job for p in scorer.prepare(traces or gsm_traces(n, seed), config) if p.job is not None]
    scorer.engine.score(jobs[:2])  # warm-up: first-call allocations are not what we measure

    _sync(scorer.model.device)
    start = time.perf_counter()
    fast = scorer.engine.score(jobs)
    _sync(scorer.model.device)
    engine = EngineTiming(
        "engine", time.perf_counter() - start, _counterfactuals(jobs), sum(s.forward_tokens for s in fast)
    )

    ref_timing, diff = None, None
    if reference:
        _sync(scorer.model.device)
        start = time.perf_counter()
        slow = reference_score(scorer.model, jobs)
        _sync(scorer.model.device)
        ref_tokens = sum(len(job.ids) * (1 + len(job.spans)) for job in jobs)
        ref_timing = EngineTiming("reference", time.perf_counter() - start, _counterfactuals(jobs), ref_tokens)
        diff = max(
            (
                abs((f.base_logprob - fm) - (s.base_logprob - sm))
                for f, s in zip(fast, slow, strict=True)
                for fm, sm in zip(f.masked_logprobs, s.masked_logprobs, strict=True)
            ),
            default=0.0,
        )

    estimate, found = None, None
    if estimator != "exact":
        approximate = [replace(job, estimator=estimator) for job in jobs]
        scorer.compute(approximate[:2])  # warm-up, as for the engine
        _sync(scorer.model.device)
        start = time.perf_counter()
        estimated = scorer.compute(approximate)
        _sync(scorer.model.device)
        tokens = sum(s.forward_tokens for s in estimated)
        estimate = EngineTiming(estimator, time.perf_counter() - start, _counterfactuals(jobs), tokens)
        found = drop_agreement(estimator, [(_drops(e), _drops(f)) for e, f in zip(estimated, fast, strict=True)])

    width = round(engine.forward_tokens / (len(jobs) + engine.counterfactuals))
    rows = max(1, scorer.engine.max_batch_tokens // max(width, 1))
    plain = plain_forward_throughput(scorer, rows, width)
    return BenchResult(len(jobs), ref_timing, engine, plain, (rows, width), diff, estimate, found)


def _drops(scores: JobScores) -> list[float]:
    return [scores.base_logprob - masked for masked in scores.masked_logprobs]


def _counterfactuals(jobs: list[EngineJob]) -> int:
    return sum(len(job.spans) for job in jobs)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
