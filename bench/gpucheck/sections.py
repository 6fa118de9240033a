"""The in-process sections of the GPU check: the engine against plain forwards, against the naive reference,
horizon against exact, and the largest batch. Each returns its Markdown lines; every timed region is
synchronized on CUDA at both ends (`kernel_speed.best_of`, `timed`)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch
from kernel_speed import best_of, synchronize
from long import chained_trace
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Qwen2Config, Qwen2ForCausalLM

from ccapo import Scorer, ScoringConfig, Trace
from ccapo.benchmark import run_benchmark
from ccapo.engine import Engine
from ccapo.gsm import GsmProblem, math_prompt
from gpucheck.attention import kernels_of, require_fused
from gpucheck.plan import Plan


def build_model(plan: Plan, tokenizer: PreTrainedTokenizerBase, directory: Path) -> PreTrainedModel:
    """A random-init Qwen2 of the plan's shape on its device, saved with the tokenizer (for the server and
    the trainer, which load it like any checkpoint)."""
    torch.manual_seed(0)
    dtype = getattr(torch, plan.dtype)
    with torch.device(plan.device):
        model = Qwen2ForCausalLM(Qwen2Config(**plan.shape, dtype=dtype)).to(dtype).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model


def timed(work: Callable[[], object], device: str) -> tuple[float, object]:
    """Seconds `work` takes, the device drained before and after; and what it returned."""
    synchronize(device)
    start = time.perf_counter()
    result = work()
    synchronize(device)
    return time.perf_counter() - start, result


def gsm_traces(problems: list[GsmProblem], n: int) -> list[Trace]:
    """The first `n` problems as traces to score (their gold solutions), as `ccapo.gsm.gsm_traces` makes them."""
    if len(problems) < n:
        raise ValueError(f"{n} GSM problems needed, {len(problems)} given")
    return [
        Trace(prompt=math_prompt(p.question), completion=p.solution, reference_answer=p.answer) for p in problems[:n]
    ]


def engine_section(model: PreTrainedModel, plan: Plan) -> list[str]:
    """At each length: two plain causal forwards of the decoder (SDPA's causal kernel, no LM head), the engine's
    base pass plus one row re-feeding nearly the whole trace (the same work), and the engine with `spans` rows."""
    device, vocab = plan.device, model.config.vocab_size
    decoder = model.get_decoder()
    rows = [
        f"One trace of n random tokens; spans deleted: one token right after the first (one row), or {plan.spans} "
        "of 4 tokens spread over the trace. 'vs plain' is the pass's time over what two plain causal forwards take "
        f"for the same number of tokens (best of {plan.repeats} after a warm-up, the passes taking turns).",
        "",
        "| tokens | pass | seconds | tokens fed | tokens/s | vs plain | attention kernels |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for n in plan.lengths:
        ids = torch.randint(100, vocab, (n,), generator=torch.Generator().manual_seed(n)).tolist()
        step = max(5, (n - 16) // plan.spans)
        one = _job(ids, [(1, 2)])
        many = _job(ids, [(1 + i * step, 5 + i * step) for i in range(plan.spans)])
        tokens = torch.tensor([ids], device=device)
        engine = Engine(model)

        def plain(tokens: torch.Tensor = tokens) -> None:
            with torch.inference_mode():
                decoder(input_ids=tokens)
                decoder(input_ids=tokens[:, 1:])

        runs = {
            "two plain causal forwards": (plain, 2 * n - 1),
            "engine, one row": (lambda e=engine, j=one: e.score([j]), one.exact_feed_tokens),
            f"engine, {plan.spans} rows": (lambda e=engine, j=many: e.score([j]), many.exact_feed_tokens),
        }
        kernels = {name: kernels_of(run, device) for name, (run, _) in runs.items()}
        for name, found in kernels.items():
            require_fused(f"{name} at {n} tokens", found, device)
        seconds = best_of(plan.repeats, {name: run for name, (run, _) in runs.items()}, device)
        plain_rate = (2 * n - 1) / seconds["two plain causal forwards"]
        for name, (_, fed) in runs.items():
            took = seconds[name]
            rows.append(
                f"| {n:,} | {name} | {took:.3f} | {fed:,} | {fed / took:,.0f} | {took * plain_rate / fed:.2f}x | "
                f"{', '.join(kernels[name])} |"
            )
        del engine, tokens
        _free(device)
    return [*rows, ""]


def reference_section(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, plan: Plan, traces) -> list[str]:
    """`ccapo bench` on the check's model: the engine against the naive reference on GSM traces."""
    result = run_benchmark(Scorer(model, tokenizer), n=len(traces), traces=traces)
    rows = [
        f"`ccapo bench`: {result.traces} GSM traces (gold solutions), the default config.",
        "",
        "| engine | traces/s | tokens/s | seconds | counterfactuals | tokens fed |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for timing in (result.reference, result.engine):
        rows.append(
            f"| {timing.name} | {timing.traces_per_s(result.traces):.2f} | {timing.tokens_per_s:,.0f} | "
            f"{timing.seconds:.3f} | {timing.counterfactuals} | {timing.forward_tokens:,} |"
        )
    return [
        *rows,
        "",
        f"- speedup {result.speedup:.2f}x; largest drop difference from the reference "
        f"{result.max_abs_drop_diff:.3g} nats ({plan.dtype});",
        f"- efficiency {result.efficiency:.2f} (plain forward {result.plain_tokens_per_s:,.0f} tokens/s at "
        f"{result.plain_shape[0]} x {result.plain_shape[1]}).",
        "",
    ]


def long_traces(scorer: Scorer, problems: list[GsmProblem], plan: Plan) -> list[tuple[Trace, int]]:
    """`bench/long.py`'s traces: GSM problems chained until each trace has `horizon_tokens` tokens."""
    rng, pool, found = random.Random(0), iter(problems), []
    for _ in range(plan.horizon_traces):
        chained: list[GsmProblem] = []
        while True:
            chained.append(next(pool))  # StopIteration: too few problems for the length (the bundle has 200)
            trace, _ = chained_trace(chained, rng)
            tokens = len(scorer.prepare([trace], ScoringConfig(target="reference"))[0].job.ids)
            if tokens >= plan.horizon_tokens:
                break
        found.append((trace, tokens))
    return found


def horizon_section(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, plan: Plan, problems) -> list[str]:
    """Exact against horizon at each window, all traces in one `score_batch`, on `bench/long.py`'s traces."""
    scorer = Scorer(model, tokenizer)
    traces = long_traces(scorer, problems, plan)
    mean = round(sum(tokens for _, tokens in traces) / len(traces))
    rows = [
        f"{len(traces)} traces of ~{mean:,} tokens (chained GSM solutions), up to {plan.horizon_spans} sentence "
        "spans each, deleted; all traces in one call, after a warm-up on the first.",
        "",
        "| estimator | seconds | speedup | tokens fed (share of exact) | spans |",
        "|---|---:|---:|---:|---:|",
    ]
    settings = [("exact", {})] + [(f"horizon W={w}", {"horizon_window": w}) for w in plan.horizon_windows]
    exact = None
    for label, options in settings:
        estimator = label.split()[0]
        config = ScoringConfig(
            segmenter="sentence", max_spans=plan.horizon_spans, intervention="delete", estimator=estimator, **options
        )
        batch = [trace for trace, _ in traces]
        scorer.score_batch(batch[:1], config)  # warm-up
        seconds, scored = timed(lambda b=batch, c=config: scorer.score_batch(b, c), plan.device)
        failed = [r.reason for r in scored.results if not r.ok]
        if failed:
            raise RuntimeError(f"{label}: unscorable trace: {failed[0]}")
        fed, spans = scored.usage.forward_tokens, sum(len(r.spans) for r in scored.results)
        exact = exact or (seconds, fed)
        share = f"{fed:,} ({fed / exact[1]:.2f})"
        rows.append(f"| {label} | {seconds:.2f} | {exact[0] / seconds:.2f}x | {share} | {spans} |")
    return [*rows, ""]


def batch_section(model: PreTrainedModel, plan: Plan) -> list[str]:
    """Engine throughput per max_batch_tokens on jobs of the paper's lengths, up to the first that runs out
    of memory (the engine retries such a batch as two halves and logs it)."""
    splits = _OomSplits()
    logging.getLogger("ccapo.engine").addHandler(splits)
    prompt, completion, spans = plan.probe
    rows = [
        f"Synthetic traces of {prompt} prompt + {completion} completion tokens, {spans} spans each.",
        "",
        "| max_batch_tokens | traces | tokens/s | seconds | peak memory GiB | out of memory |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    largest = None
    try:
        for budget in plan.budgets:
            jobs = _paper_shaped_jobs(plan, budget, model.config.vocab_size)
            engine = Engine(model, max_batch_tokens=budget)
            splits.count = 0
            if plan.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            try:
                seconds, _ = timed(lambda e=engine, j=jobs: e.score(j), plan.device)
                oom = splits.count > 0
            except torch.cuda.OutOfMemoryError:
                seconds, oom = float("nan"), True
            peak = f"{torch.cuda.max_memory_allocated() / 2**30:.1f}" if plan.device == "cuda" else "-"
            tokens = sum(job.feed_tokens for job in jobs)
            rows.append(
                f"| {budget:,} | {len(jobs)} | {tokens / seconds:,.0f} | {seconds:.2f} | {peak} | "
                f"{'yes: ' + str(splits.count) + ' split(s)' if oom else 'no'} |"
            )
            del engine, jobs
            _free(plan.device)
            if oom:
                break
            largest = budget
    finally:
        logging.getLogger("ccapo.engine").removeHandler(splits)
    return [*rows, "", f"Largest max_batch_tokens without running out of memory: {largest or 'none tried fits'}.", ""]


def _job(ids: list[int], spans: list[tuple[int, int]]):
    from ccapo.jobs import EngineJob

    return EngineJob(ids=ids, answer_start=len(ids) - 4, spans=spans, intervention="delete", placeholder=0)


def _paper_shaped_jobs(plan: Plan, budget: int, vocab: int) -> list:
    """Random-token jobs of the paper's lengths, enough to fill `budget` about twice."""
    from ccapo.jobs import EngineJob

    prompt, completion, spans = plan.probe
    answer = 8
    width = max(1, (completion - answer) // (2 * spans))
    starts = [prompt + i * (completion - answer - width) // max(spans - 1, 1) for i in range(spans)]
    per_job = prompt + completion + sum(prompt + completion - s for s in starts)
    generator = torch.Generator().manual_seed(0)
    jobs = []
    for _ in range(max(2, 2 * budget // per_job)):
        ids = torch.randint(100, vocab, (prompt + completion,), generator=generator).tolist()
        jobs.append(EngineJob(ids, prompt + completion - answer, [(s, s + width) for s in starts], "delete", 0))
    return jobs


class _OomSplits(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "out of memory" in record.getMessage()


def _free(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
