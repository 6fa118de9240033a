"""Long traces: the exact, gradient and refine estimators side by side, at ~1.2k and ~4k tokens.

    python bench/long.py                                  # default model, 2 quiet CPU cores: about 12 minutes
    python bench/long.py --traces 8 3 --interventions delete attention --out long.md
    python bench/long.py --dry-run                        # a tiny random model, short traces: checks the script

Each trace chains gold gsm_symbolic solutions: the prompt asks all their questions and for the sum
of their answers; the completion solves them one after the other, a filler sentence planted among
each solution's lines, and ends with the sum of the answers, so every problem's calculations feed
the final answer and no filler can. Spans: the "sentence" segmenter, 40 per trace. Per length and
intervention, each estimator scores the same traces; reported: seconds, speedup over exact, tokens
fed (refine's share of exact's), Spearman with exact's drops (mean over traces), top-3 overlap,
the share of traces whose exact top 3 it matches, and the calc-vs-filler AUC (sentences that
calculate against planted filler sentences) next to exact's.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import sys
import time
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.table import Table
from transformers import LlamaConfig, LlamaForCausalLM

from ccapo import Scorer, ScoringConfig, Trace
from ccapo.agreement import Agreement, agreement
from ccapo.faithfulness import mann_whitney_auc
from ccapo.gsm import SYSTEM_PROMPT, GsmProblem, gsm_symbolic_problems, insert_fillers, is_calculation
from ccapo.interventions import INTERVENTIONS
from ccapo.models import ensure_default_model
from ccapo.result import TraceImportance

ESTIMATORS = ("exact", "gradient", "refine")
console = Console(stderr=True)


@dataclass(frozen=True)
class LongTrace:
    trace: Trace
    tokens: int  # prompt + completion
    fillers: list[tuple[int, int]]  # character ranges of the planted filler lines in the completion


@dataclass(frozen=True)
class Row:
    tokens: int  # mean trace length
    intervention: str
    estimator: str
    seconds: float
    forward_tokens: int
    auc: float
    agreement: Agreement | None  # None for exact itself


def chained_trace(problems: list[GsmProblem], rng: random.Random) -> tuple[Trace, list[tuple[int, int]]]:
    """The problems' questions in one prompt, their solutions (a filler planted in each) in one completion."""
    questions = "\n\n".join(f"Problem {j}: {p.question}" for j, p in enumerate(problems, start=1))
    ask = 'Solve each problem, then add up their answers. Give the sum on its own line after "####".'
    prompt = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": f"{questions}\n\n{ask}"}]
    completion, fillers = "", []
    for j, problem in enumerate(problems, start=1):
        solution, lines = insert_fillers(problem.solution, 1, rng)
        completion += f"Problem {j}.\n"
        fillers += [
            (len(completion) + line.start, len(completion) + line.end) for line in lines if line.label == "filler"
        ]
        completion += solution[: solution.rindex("####")].rstrip() + "\n\n"
    answers = [int(float(p.answer)) for p in problems]
    total = sum(answers)
    completion += f"The sum of the answers is {' + '.join(map(str, answers))} = {total}.\n#### {total}"
    return Trace(prompt=prompt, completion=completion, reference_answer=str(total)), fillers


def build_traces(scorer: Scorer, target_tokens: int, n: int, seed: int) -> list[LongTrace]:
    """`n` traces, each chaining problems until it is at least `target_tokens` long."""
    rng = random.Random(seed)
    pool = iter(gsm_symbolic_problems(n * (target_tokens // 100 + 4), seed))
    traces = []
    for _ in range(n):
        chained: list[GsmProblem] = []
        while True:
            chained.append(next(pool))
            trace, fillers = chained_trace(chained, rng)
            tokens = len(scorer._prompt_ids(trace.prompt)) + len(scorer.tokenizer(trace.completion).input_ids)
            if tokens >= target_tokens:
                break
        traces.append(LongTrace(trace, tokens, fillers))
    return traces


def labeled_drops(results: list[TraceImportance], traces: list[LongTrace]) -> tuple[list[float], list[float]]:
    """Drops of the calculating sentences and of the planted filler sentences, pooled over traces."""
    calc, filler = [], []
    for result, long in zip(results, traces, strict=True):
        for span in result.spans:
            if any(start <= span.start and span.end <= end for start, end in long.fillers):
                filler.append(span.drop)
            elif is_calculation(span.text):
                calc.append(span.drop)
    return calc, filler


def measure(scorer: Scorer, traces: list[LongTrace], intervention: str, max_spans: int) -> list[Row]:
    """Every estimator on the same traces; the approximate ones compared with exact."""
    mean_tokens = round(sum(t.tokens for t in traces) / len(traces))
    rows, exact = [], None
    warm_up = Trace(prompt="Add.", completion="First, 2 + 2 = 4. Then 4 + 1 = 5.\n#### 5")
    for estimator in ESTIMATORS:
        config = ScoringConfig(
            segmenter="sentence", max_spans=max_spans, intervention=intervention, estimator=estimator
        )
        console.log(f"~{mean_tokens} tokens, {intervention}: {estimator} on {len(traces)} traces")
        scorer.score([warm_up], config)  # first-call allocations are not what is measured
        start = time.perf_counter()
        batch = scorer.score_batch([t.trace for t in traces], config)
        seconds = time.perf_counter() - start
        results = batch.results
        if not all(r.ok for r in results):
            raise RuntimeError(f"unscorable traces: {[r.reason for r in results if not r.ok]}")
        exact = exact or results
        found = None if estimator == "exact" else agreement(estimator, results, exact)
        calc, filler = labeled_drops(results, traces)
        auc = mann_whitney_auc(calc, filler)
        if estimator == "exact":
            spans = sum(len(r.spans) for r in results)
            console.log(f"  {spans} spans: {len(calc)} calculating, {len(filler)} planted fillers")
        rows.append(Row(mean_tokens, intervention, estimator, seconds, batch.usage.forward_tokens, auc, found))
        console.log(f"  {seconds:.1f} s, {batch.usage.forward_tokens:,} tokens fed, AUC {auc:.3f}")
    return rows


COLUMNS = (
    "tokens",
    "intervention",
    "estimator",
    "seconds",
    "speedup",
    "tokens fed (share of exact)",
    "Spearman",
    "top-3 overlap",
    "exact top 3 matched",
    "calc-vs-filler AUC",
)


def cells(row: Row, exact: Row) -> list[str]:
    found = row.agreement
    share = f"{row.forward_tokens:,} ({row.forward_tokens / exact.forward_tokens:.2f})"
    return [
        f"{row.tokens:,}",
        row.intervention,
        row.estimator,
        f"{row.seconds:.1f}",
        f"{exact.seconds / row.seconds:.1f}x",
        share,
        _number(found.spearman) if found else "",
        _number(found.top_overlap) if found else "",
        f"{found.top_match:.0%} of {found.traces}" if found else "",
        _number(row.auc),
    ]


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def report(rows: list[Row]) -> tuple[Table, str]:
    """A rich table for the terminal and the same as a markdown table."""
    table = Table(title="exact vs gradient vs refine on long traces")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("intervention", "estimator") else "right")
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    exact = rows[0]
    for row in rows:
        exact = row if row.estimator == "exact" else exact
        table.add_row(*cells(row, exact))
        lines.append("| " + " | ".join(cells(row, exact)) + " |")
    return table, "\n".join(lines) + "\n"


def tiny_scorer() -> Scorer:
    """A random two-layer llama with the default model's tokenizer: the script's code, in seconds."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ensure_default_model())
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
    )
    return Scorer(LlamaForCausalLM(config).eval(), tokenizer, model_id="tiny random llama")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1200, 4000], help="target trace tokens")
    parser.add_argument("--traces", type=int, nargs="+", default=[3, 1], help="traces per length (one per length)")
    parser.add_argument("--interventions", nargs="+", choices=INTERVENTIONS, default=["delete"])
    parser.add_argument("--max-spans", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="default: the bundled SmolLM2-135M")
    parser.add_argument("--out", help="also write the markdown table here")
    parser.add_argument("--dry-run", action="store_true", help="tiny random model, ~300 and ~600 tokens, 1 trace")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.lengths, args.traces = [300, 600], [1, 1]
    if len(args.traces) != len(args.lengths):
        parser.error(f"--traces gives {len(args.traces)} counts for {len(args.lengths)} lengths")
    logging.getLogger("transformers").setLevel(logging.ERROR)

    scorer = tiny_scorer() if args.dry_run else Scorer.from_pretrained(args.model)
    console.log(f"{scorer.model_id} on {scorer.model.device}, {torch.get_num_threads()} threads")
    rows = []
    for length, n in zip(args.lengths, args.traces, strict=True):
        traces = build_traces(scorer, length, n, args.seed)
        for intervention in args.interventions:
            rows += measure(scorer, traces, intervention, args.max_spans)
    table, markdown = report(rows)
    Console(width=200).print(table)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            out.write(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
