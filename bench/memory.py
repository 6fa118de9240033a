"""Memory benchmark: one long trace (~8k tokens, 64 sentence spans) scored exactly on the default model.

Chains gsm_symbolic gold solutions into one completion that fills the model's context, scores it
with the exact engine ("sentence" spans, "delete") and prints the time, the tokens fed, the
process's peak RSS and the engine's own estimate of its peak, with a line per forward pass.

    python bench/memory.py                      # ~8k tokens, 64 spans: long on a CPU
    python bench/memory.py --tokens 2048        # a shorter trace
    python bench/memory.py --max-passes 8       # stop after 8 passes (the longest rows come first)
    python bench/memory.py --tokens 4096 --spans 40 --horizon-window 32   # the horizon estimator instead

It uses only what every version of ccapo has (`Scorer`, `Engine.score_cancellable`,
`horizon.horizon_scores`), so the same script measures another checkout side by side: run it with
`PYTHONPATH` pointing at that checkout.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import time

import torch

import ccapo
from ccapo import Scorer, ScoringConfig, Trace
from ccapo.gsm import gsm_symbolic_problems, math_prompt
from ccapo.horizon import horizon_scores
from ccapo.jobs import EngineJob


def long_job(scorer: Scorer, config: ScoringConfig, tokens: int) -> EngineJob:
    """Gold solutions chained into one completion whose scored sequence is the longest within `tokens`."""
    problems = gsm_symbolic_problems(200)
    best: EngineJob | None = None
    for n in range(1, len(problems) + 1):
        steps = "\n\n".join(p.solution.rsplit("####", 1)[0].strip() for p in problems[:n])
        trace = Trace(prompt=math_prompt(problems[0].question), completion=f"{steps}\n#### {problems[n - 1].answer}")
        if len(scorer.tokenizer(trace.completion).input_ids) > tokens:
            break
        job = scorer.prepare([trace], config)[0].job
        if job is None or len(job.ids) > tokens:
            break
        best = job
    if best is None:
        raise SystemExit(f"--tokens {tokens} holds not even one solution")
    return best


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model id or directory (default: the bundled SmolLM2-135M)")
    parser.add_argument("--tokens", type=int, default=8192, help="longest scored sequence (prompt + completion)")
    parser.add_argument("--spans", type=int, default=64)
    parser.add_argument("--memory-mib", type=int, default=None, help="engine memory budget (default: adaptive)")
    parser.add_argument("--max-passes", type=int, default=None, help="stop after this many forward passes")
    parser.add_argument("--horizon-window", type=int, default=None, help="score with the horizon estimator instead")
    args = parser.parse_args()

    torch.manual_seed(0)
    scorer = Scorer.from_pretrained(args.model)
    engine = scorer.engine
    if args.memory_mib is not None:
        engine.memory_bytes = args.memory_mib << 20
    config = ScoringConfig(segmenter="sentence", max_spans=args.spans, intervention="delete")
    job = long_job(scorer, config, min(args.tokens, scorer.context_length))
    rows = job.branches()
    if args.horizon_window is not None:
        job = dataclasses.replace(job, estimator="horizon", horizon_window=args.horizon_window)
    print(
        f"trace: {len(job.ids)} tokens scored ({job.answer_start} before the answer), {len(job.spans)} spans, "
        f"{job.feed_tokens} tokens to feed; longest row {max(len(b.tokens) for b in rows)} tokens",
        flush=True,
    )
    engine.score([EngineJob([*job.ids[:8], *job.ids[-4:]], 8, [(2, 4)], "delete", 0)])  # warm-up allocations
    baseline = rss_mib()
    memory = engine.memory_budget()
    print(
        f"model loaded: RSS {baseline:.0f} MiB; engine budget {memory >> 20} MiB "
        f"({'given' if engine.memory_bytes else 'adaptive'}), {engine.cached_tokens_budget(memory)} cached tokens "
        f"per group, KV {engine.costs.kv} bytes per token",
        flush=True,
    )

    passes: list[float] = []
    started = time.perf_counter()

    def report(_module, args_, kwargs, output) -> None:
        ids = kwargs.get("input_ids", args_[0] if args_ else None)
        keys = output.cache.get_seq_length() if output.cache is not None else ids.shape[1]
        passes.append(time.perf_counter())
        print(
            f"pass {len(passes):4d}: {ids.shape[0]} x {ids.shape[1]} tokens over {keys} keys, "
            f"{passes[-1] - started:7.1f} s, RSS {rss_mib():.0f} MiB (peak {peak_rss_mib():.0f})",
            flush=True,
        )

    hook = engine.decoder.register_forward_hook(report, with_kwargs=True)
    limit = args.max_passes
    try:
        stop = lambda _: limit is not None and len(passes) >= limit  # noqa: E731
        if args.horizon_window is None:
            (scores,) = engine.score_cancellable([job], stop)
        else:
            (scores,) = horizon_scores(scorer.model, [job], stop)
    finally:
        hook.remove()
    seconds = time.perf_counter() - started
    done = "all passes" if scores is not None else f"stopped after {len(passes)} passes (--max-passes)"
    fed = scores.forward_tokens if scores is not None else "n/a"
    print(f"{done}: {seconds:.1f} s, {len(passes)} forward passes, {fed} tokens fed (planned {job.feed_tokens})")
    print(f"ccapo from {ccapo.__file__}")
    estimate = "n/a (horizon)" if args.horizon_window is not None else f"{engine.peak_estimate_bytes / 2**20:.0f} MiB"
    print(
        f"peak RSS {peak_rss_mib():.0f} MiB (+{peak_rss_mib() - baseline:.0f} over the loaded model); "
        f"engine estimate of its own peak {estimate}"
    )


if __name__ == "__main__":
    main()
