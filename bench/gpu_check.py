"""One GPU check for the minutes a GPU is lent: random-init models of real shapes, no model hub.

    python bench/gpu_check.py [--out DIR]          # one H100/H200: about 5-8 minutes
    python bench/gpu_check.py --dry-run --out DIR  # the same code, tiny shapes, CPU: under 3 minutes

Writes DIR/gpu_check.md (DIR: --out, else $OUT, else the current directory) with:
1. the fast engine against the naive reference (bf16 on CUDA) on Qwen2.5-1.5B and 3B shapes, and
   the largest engine batch (max_batch_tokens) that runs without running out of memory;
2. the scoring server at 1, 8 and 32 clients, batched against unbatched (1.5B shape);
3. one GRPO step at the paper's shapes (8 generations x 768 tokens, LoRA r=32, 3B shape), uniform
   against counterfactual weighting, with the share of the step spent scoring.
Models are built from their published configs in code and saved with the tokenizer (--tokenizer,
default: the bundled model's), so the server and the trainer load them like any checkpoint.
Each section is reported even when another fails. The pieces come from ccapo.benchmark,
bench/server_load.py and bench/train_step.py.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from server_load import load, percentile, server
from train_step import run_arm
from transformers import AutoTokenizer, PreTrainedTokenizerBase, Qwen2Config, Qwen2ForCausalLM

from ccapo import Scorer
from ccapo.benchmark import run_benchmark
from ccapo.engine import Engine
from ccapo.gsm import gsm_traces
from ccapo.jobs import EngineJob

# The published Qwen2.5 configs, minus what a random init does not need.
QWEN = dict(vocab_size=151936, max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6)
SHAPES = {
    "Qwen2.5-1.5B": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        **QWEN,
    ),
    "Qwen2.5-3B": dict(
        hidden_size=2048,
        intermediate_size=11008,
        num_hidden_layers=36,
        num_attention_heads=16,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        **QWEN,
    ),
}
TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=True,
    **QWEN,
)


@dataclass(frozen=True)
class Plan:
    """Sizes of every measurement: the real run's, or the dry run's tiny ones."""

    device: str
    dtype: torch.dtype
    shapes: dict[str, dict]
    traces: int  # engine vs reference, and requests per server row
    budgets: tuple[int, ...]  # max_batch_tokens tried, in order, until one runs out of memory
    probe: tuple[int, int, int]  # synthetic jobs: prompt tokens, completion tokens, spans
    clients: tuple[int, ...] = (1, 8, 32)
    grpo: list[str] = field(default_factory=list)  # TrainConfig overrides for the GRPO step


def real_plan() -> Plan:
    return Plan(
        device="cuda",
        dtype=torch.bfloat16,
        shapes=SHAPES,
        traces=32,
        budgets=(32768, 65536, 131072, 262144, 524288),
        probe=(256, 768, 10),
        grpo=[
            "num_generations=8",
            "prompts_per_step=1",
            "max_completion_length=768",
            "generation_batch_size=8",
            "micro_batch_size=8",
            "lora={r: 32, alpha: 32, dropout: 0.1}",
            "gradient_checkpointing=true",
            "dtype=bfloat16",
            "temperature=0.6",
            "top_p=0.95",
        ],
    )


def dry_plan() -> Plan:
    tiny = {f"{name} (tiny)": TINY for name in SHAPES}
    return Plan(
        device="cpu",
        dtype=torch.float32,
        shapes=tiny,
        traces=2,
        budgets=(256, 512),
        probe=(8, 24, 2),
        grpo=["num_generations=2", "prompts_per_step=1", "max_completion_length=8", "micro_batch_size=2"],
    )


def build_model(shape: dict, plan: Plan, tokenizer: PreTrainedTokenizerBase, directory: Path) -> float:
    """A random-init Qwen2 of `shape`, saved with the tokenizer; returns the parameter count."""
    torch.manual_seed(0)
    with torch.device(plan.device):
        model = Qwen2ForCausalLM(Qwen2Config(**shape, dtype=plan.dtype)).to(plan.dtype)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    params = sum(p.numel() for p in model.parameters())
    del model
    _free(plan)
    return params


def engine_section(name: str, directory: Path, params: float, plan: Plan) -> list[str]:
    scorer = Scorer.from_pretrained(str(directory), device=plan.device, dtype=plan.dtype)
    result = run_benchmark(scorer, n=plan.traces)
    rows = [
        f"### {name} ({params / 1e9:.2f}B parameters, {plan.dtype}, {plan.device})",
        "",
        "| engine | traces/s | tokens/s | seconds | counterfactuals | tokens fed |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for timing in (result.reference, result.engine):
        rows.append(
            f"| {timing.name} | {timing.traces_per_s(result.traces):.2f} | {timing.tokens_per_s:,.0f} | "
            f"{timing.seconds:.2f} | {timing.counterfactuals} | {timing.forward_tokens:,} |"
        )
    rows += [
        "",
        f"- speedup {result.speedup:.2f}x; largest drop difference from the reference "
        f"{result.max_abs_drop_diff:.3g} nats ({plan.dtype});",
        f"- efficiency {result.efficiency:.2f} (plain forward {result.plain_tokens_per_s:,.0f} tokens/s at "
        f"{result.plain_shape[0]} x {result.plain_shape[1]}).",
        "",
        *largest_batch(scorer, plan),
    ]
    del scorer
    _free(plan)
    return rows


def paper_shaped_jobs(plan: Plan, budget: int, vocab: int) -> list[EngineJob]:
    """Random-token jobs of the paper's lengths, enough to fill `budget` about twice."""
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


def largest_batch(scorer: Scorer, plan: Plan) -> list[str]:
    """Engine throughput per max_batch_tokens, up to the first budget that runs out of memory."""
    splits = _OomSplits()
    logging.getLogger("ccapo.engine").addHandler(splits)
    prompt, completion, spans = plan.probe
    rows = [
        f"Largest batch: synthetic traces of {prompt} prompt + {completion} completion tokens, {spans} spans each.",
        "",
        "| max_batch_tokens | traces | tokens/s | seconds | peak memory GiB | out of memory |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    largest = None
    try:
        for budget in plan.budgets:
            jobs = paper_shaped_jobs(plan, budget, scorer.vocab_size)
            engine = Engine(scorer.model, max_batch_tokens=budget)
            splits.count = 0
            _reset_peak(plan)
            start = time.perf_counter()
            try:
                engine.score(jobs)
                oom = splits.count > 0
            except torch.cuda.OutOfMemoryError:
                oom = True
            _sync(plan)
            seconds = time.perf_counter() - start
            tokens = sum(job.feed_tokens for job in jobs)
            rows.append(
                f"| {budget:,} | {len(jobs)} | {tokens / seconds:,.0f} | {seconds:.2f} | {_peak_gib(plan)} | "
                f"{'yes: ' + str(splits.count) + ' split(s)' if oom else 'no'} |"
            )
            del engine, jobs
            _free(plan)
            if oom:
                break
            largest = budget
    finally:
        logging.getLogger("ccapo.engine").removeHandler(splits)
    rows += ["", f"Largest max_batch_tokens without running out of memory: {largest or 'none tried fits'}.", ""]
    return rows


def server_section(name: str, directory: Path, plan: Plan) -> list[str]:
    traces = [t.model_dump(exclude_none=True) for t in gsm_traces(plan.traces, 0)]
    patient = {"CCAPO_REQUEST_TIMEOUT_S": "3600", "CCAPO_MAX_QUEUE_TRACES": str(4 * plan.traces)}
    settings = {
        "batched": patient,
        "unbatched": {**patient, "CCAPO_SERVER_BATCH_TOKENS": "1", "CCAPO_MAX_WAIT_MS": "0"},
    }
    device = {"CCAPO_DEVICE": plan.device, "CCAPO_DTYPE": str(plan.dtype).removeprefix("torch.")}
    rows = [
        f"{name}: {plan.traces} one-trace `gsm_symbolic` requests per row.",
        "",
        "| server | clients | traces/s | p50 s | p99 s |",
        "|---|---:|---:|---:|---:|",
    ]
    throughput: dict[tuple[str, int], float] = {}
    for setting, env in settings.items():
        with server(str(directory), {**env, **device}) as url:
            asyncio.run(load(url, traces[:2], 1))  # warm-up
            for clients in plan.clients:
                seconds, latencies = asyncio.run(load(url, traces, clients))
                throughput[setting, clients] = plan.traces / seconds
                rows.append(
                    f"| {setting} | {clients} | {throughput[setting, clients]:.2f} | "
                    f"{percentile(latencies, 50):.3f} | {percentile(latencies, 99):.3f} |"
                )
    top = max(plan.clients)
    ratio = throughput["batched", top] / throughput["unbatched", top]
    rows += ["", f"Batched / unbatched at {top} clients: {ratio:.2f}x.", ""]
    return rows


def grpo_section(name: str, directory: Path, plan: Plan) -> list[str]:
    overrides = [f"model={directory}", *plan.grpo]
    rows = [
        f"{name}: one prompt, {' '.join(plan.grpo)}; every sample scored against its reference answer.",
        "",
        "| arm | generate s | score s | update s | step s | scoring share of the step | completion tokens |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for arm in ("uniform", "engine"):
            (record,) = run_arm(arm, 1, overrides, Path(tmp))
            share = record.get("time/score_s", 0.0) / record["time/step_s"]
            rows.append(
                f"| {arm} | {record['time/generate_s']:.2f} | {record.get('time/score_s', 0.0):.2f} | "
                f"{record['time/update_s']:.2f} | {record['time/step_s']:.2f} | {share:.1%} | "
                f"{record.get('completion_length/mean', 0):.0f} |"
            )
            _free(plan)
    return [*rows, ""]


def run(plan: Plan, tokenizer: PreTrainedTokenizerBase, workdir: Path, report: Path) -> bool:
    """Every section in turn, the report rewritten after each; False if any section failed."""
    lines = ["# ccapo GPU check", "", _machine(plan), ""]
    ok = True

    def section(title: str, body: Callable[[], list[str]]) -> None:
        nonlocal ok
        start = time.perf_counter()
        lines.extend([f"## {title}", ""])
        try:
            lines.extend(body())
        except Exception:  # one failed section must not cost the others' numbers
            ok = False
            lines.extend(["Failed:", "", "```", traceback.format_exc(), "```", ""])
        lines.append(f"_({time.perf_counter() - start:.0f} s)_\n")
        report.write_text("\n".join(lines))
        print(f"[gpu_check] {title}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)

    names = list(plan.shapes)
    directories = {name: workdir / name.split()[0] for name in names}
    params = {}
    for name in names:
        params[name] = build_model(plan.shapes[name], plan, tokenizer, directories[name])
    for name in names:
        section(f"Engine against reference: {name}", lambda n=name: engine_section(n, directories[n], params[n], plan))
    section("Scoring server", lambda: server_section(names[0], directories[names[0]], plan))
    section("One GRPO step at the paper's shapes", lambda: grpo_section(names[-1], directories[names[-1]], plan))
    return ok


class _OomSplits(logging.Handler):
    """Counts the engine's out-of-memory splits (it retries a batch as two halves and logs it)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "out of memory" in record.getMessage()


def _machine(plan: Plan) -> str:
    device = torch.cuda.get_device_name() if plan.device == "cuda" else platform.processor() or "CPU"
    return f"{device}; torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"


def _sync(plan: Plan) -> None:
    if plan.device == "cuda":
        torch.cuda.synchronize()


def _free(plan: Plan) -> None:
    if plan.device == "cuda":
        torch.cuda.empty_cache()


def _reset_peak(plan: Plan) -> None:
    if plan.device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(plan: Plan) -> str:
    return f"{torch.cuda.max_memory_allocated() / 2**30:.1f}" if plan.device == "cuda" else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="report directory (default: $OUT, else .)")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU: checks the script in minutes")
    parser.add_argument("--tokenizer", help="tokenizer directory (default: the bundled model's, fetched once)")
    args = parser.parse_args(argv)
    plan = dry_plan() if args.dry_run else real_plan()
    if plan.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: run with --dry-run to check the script on CPU")
    out = args.out or Path(os.environ.get("OUT", "."))
    out.mkdir(parents=True, exist_ok=True)
    if args.tokenizer is None:
        from ccapo.models import ensure_default_model

        args.tokenizer = str(ensure_default_model())
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    report = out / "gpu_check.md"
    with tempfile.TemporaryDirectory(prefix="ccapo-gpu-check-") as workdir:
        ok = run(plan, tokenizer, Path(workdir), report)
    print(report.read_text())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
