"""Long traces: the exact estimator beside the approximate ones, at ~1.2k and ~4k tokens.

    python bench/long.py                                    # default model: exact, horizon, refine, gradient
    python bench/long.py --lengths 4000 --traces 4 --horizon-windows 32 128 --verify 5 --plot long.png
    python bench/long.py --dry-run                          # a tiny random model, short traces: checks the script

Each trace chains gold gsm_symbolic solutions: the prompt asks all their questions and for the sum
of their answers; the completion solves them one after the other, a filler sentence planted among
each solution's lines, and ends with the sum of the answers, so every problem's calculations feed
the final answer and no filler can. Spans: the "sentence" segmenter, `--max-spans` per trace.
Per length, every estimator setting (a knob value: horizon's window, tail and verified spans,
refine's budget) scores the same traces one at a time; reported per setting, averaged over traces (and per
trace with --per-trace): wall seconds and tokens fed (cost, and speedup over exact), and agreement
with exact (`ccapo.agreement`): significant-span recall, normalized token-weight Pearson and mean
abs difference, drop Pearson, Spearman and top-5 overlap. `--plot` draws each estimator's cost
against its recall and weight correlation over its knob.
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
from ccapo.gsm import SYSTEM_PROMPT, GsmProblem, gsm_symbolic_problems, insert_fillers
from ccapo.models import ensure_default_model
from ccapo.prepared import prompt_ids_of
from ccapo.result import TraceImportance

console = Console(stderr=True)


@dataclass(frozen=True)
class LongTrace:
    trace: Trace
    tokens: int  # prompt + completion
    fillers: list[tuple[int, int]]  # character ranges of the planted filler lines in the completion


@dataclass(frozen=True)
class Setting:
    """One estimator at one value of its knob."""

    estimator: str
    knob: str  # e.g. "W=128, T=64, m=5"; "" for exact and gradient
    options: dict

    @property
    def label(self) -> str:
        return f"{self.estimator} {self.knob}".strip()

    @property
    def family(self) -> str:
        """The plot's line: the estimator, with horizon's tail and verification (its window varies along it)."""
        tail, verify = self.options.get("horizon_tail"), self.options.get("horizon_verify")
        return self.estimator + (f" T={tail}" if tail else "") + (f" m={verify}" if verify else "")


@dataclass(frozen=True)
class Row:
    tokens: int  # mean trace length
    setting: Setting
    seconds: list[float]  # per trace
    forward_tokens: list[int]  # per trace
    agreement: Agreement | None  # None for exact itself
    per_trace: list[Agreement]  # each trace's own agreement (empty for exact)


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
            completion_ids = scorer.tokenizer(trace.completion).input_ids
            tokens = len(prompt_ids_of(scorer.tokenizer, trace.prompt)) + len(completion_ids)
            if tokens >= target_tokens:
                break
        traces.append(LongTrace(trace, tokens, fillers))
    return traces


def settings(
    windows: list[int], tails: list[int], verify: list[int], budgets: list[float], gradient: bool
) -> list[Setting]:
    """exact first (the others are compared with it), then every knob value of each estimator."""
    found = [Setting("exact", "", {})]
    for m in [0, *verify]:
        for t in tails:
            knob = (f", T={t}" if t else "") + (f", m={m}" if m else "")
            options = {"horizon_tail": t, "horizon_verify": m}
            found += [Setting("horizon", f"W={w}{knob}", {"horizon_window": w, **options}) for w in windows]
    found += [Setting("refine", f"budget={b}", {"refine_budget": b}) for b in budgets]
    return found + ([Setting("gradient", "", {})] if gradient else [])


def measure(scorer: Scorer, traces: list[LongTrace], setups: list[Setting], max_spans: int) -> list[Row]:
    """Every setting on the same traces, one trace at a time; the approximate ones compared with exact."""
    mean_tokens = round(sum(t.tokens for t in traces) / len(traces))
    rows: list[Row] = []
    exact: list[TraceImportance] = []
    warm_up = Trace(prompt="Add.", completion="First, 2 + 2 = 4. Then 4 + 1 = 5.\n#### 5")
    for setting in setups:
        config = ScoringConfig(
            segmenter="sentence", max_spans=max_spans, intervention="delete", estimator=setting.estimator,
            **setting.options,
        )  # fmt: skip
        console.log(f"~{mean_tokens} tokens: {setting.label} on {len(traces)} traces")
        scorer.score([warm_up], config)  # first-call allocations are not what is measured
        results, seconds, fed = [], [], []
        for long in traces:
            start = time.perf_counter()
            batch = scorer.score_batch([long.trace], config)
            seconds.append(time.perf_counter() - start)
            fed.append(batch.usage.forward_tokens)
            if not batch.results[0].ok:
                raise RuntimeError(f"unscorable trace: {batch.results[0].reason}")
            results += batch.results
        exact = exact or results
        found = None if setting.estimator == "exact" else agreement(setting.label, results, exact, k=TOP)
        pairs = zip(results, exact, strict=True)
        each = [] if found is None else [agreement(setting.label, [r], [e], k=TOP) for r, e in pairs]
        rows.append(Row(mean_tokens, setting, seconds, fed, found, each))
        summary = f"  {sum(seconds):.1f} s, {sum(fed):,} tokens fed"
        if found is not None:
            summary += (
                f", recall {found.recall:.3f} ({found.recall_traces}), weight Pearson {found.weight_pearson:.3f},"
                f" drop Pearson {found.drop_pearson:.3f}"
            )
        console.log(summary)
    return rows


TOP = 5
COLUMNS = (
    "tokens",
    "estimator",
    "seconds",
    "speedup",
    "tokens fed (share of exact)",
    "recall (traces)",
    "weight Pearson",
    "weight MAD",
    "drop Pearson",
    "Spearman",
    f"top-{TOP} overlap",
)


def cells(row: Row, exact: Row, trace: int | None = None) -> list[str]:
    """A row's cells, averaged over its traces or for one `trace`."""
    pick = slice(None) if trace is None else slice(trace, trace + 1)
    seconds, fed = sum(row.seconds[pick]), sum(row.forward_tokens[pick])
    exact_seconds, exact_fed = sum(exact.seconds[pick]), sum(exact.forward_tokens[pick])
    found = row.agreement if trace is None else (row.per_trace[trace] if row.per_trace else None)
    measures = ["", "", "", "", "", ""]
    if found is not None:
        recall = f"{_number(found.recall)} ({found.recall_traces})"
        measures = [recall, *(map(_number, (found.weight_pearson, found.weight_mad, found.drop_pearson))),
                    _number(found.spearman), _number(found.top_overlap)]  # fmt: skip
    return [
        f"{row.tokens:,}" if trace is None else f"{row.tokens:,} #{trace + 1}",
        row.setting.label,
        f"{seconds:.1f}",
        f"{exact_seconds / seconds:.1f}x",
        f"{fed:,} ({fed / exact_fed:.2f})",
        *measures,
    ]


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def report(rows: list[Row], per_trace: bool) -> tuple[Table, str]:
    """A rich table for the terminal and the same as a markdown table (per trace too if asked)."""
    table = Table(title="exact vs approximate estimators on long traces (delete)")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "estimator" else "right")
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    exact = rows[0]
    for row in rows:
        exact = row if row.setting.estimator == "exact" else exact
        table.add_row(*cells(row, exact))
        lines.append("| " + " | ".join(cells(row, exact)) + " |")
        if per_trace:
            lines += ["| " + " | ".join(cells(row, exact, t)) + " |" for t in range(len(row.seconds))]
    return table, "\n".join(lines) + "\n"


def plot(rows: list[Row], path: str) -> None:
    """Speedup over exact against recall and weight Pearson, one line per estimator over its knob,
    one column of panels per length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({row.tokens for row in rows})
    fig, axes = plt.subplots(2, len(lengths), figsize=(5 * len(lengths), 8), squeeze=False)
    for col, length in enumerate(lengths):
        at = [row for row in rows if row.tokens == length]
        exact_seconds = sum(next(r for r in at if r.setting.estimator == "exact").seconds)
        families: dict[str, list[Row]] = {}
        for row in at:
            if row.agreement is not None:
                families.setdefault(row.setting.family, []).append(row)
        for family, members in families.items():
            x = [exact_seconds / sum(r.seconds) for r in members]
            for ax, measure in zip(axes[:, col], ("recall", "weight_pearson"), strict=True):
                ax.plot(x, [getattr(r.agreement, measure) for r in members], marker="o", label=family)
                for r, xi in zip(members, x, strict=True):
                    ax.annotate(r.setting.knob, (xi, getattr(r.agreement, measure)), fontsize=7)
        for ax, name in zip(axes[:, col], ("significant-span recall", "weight Pearson"), strict=True):
            ax.set_title(f"~{length:,} tokens")
            ax.set_xlabel("speedup over exact (wall time)")
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


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
    parser.add_argument("--traces", type=int, nargs="+", default=[4, 4], help="traces per length (one per length)")
    parser.add_argument("--max-spans", type=int, nargs="+", default=[40], help="per length, or one for all")
    parser.add_argument("--horizon-windows", type=int, nargs="*", default=[32, 128], help="horizon's W values")
    parser.add_argument("--horizon-tails", type=int, nargs="+", default=[0], help="horizon's tail T values (each W)")
    parser.add_argument("--verify", type=int, nargs="*", default=[5], help="horizon's verified spans m (each W, T)")
    parser.add_argument("--refine-budgets", type=float, nargs="*", default=[0.5])
    parser.add_argument("--no-gradient", action="store_true", help="leave the gradient estimator out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="default: the bundled SmolLM2-135M")
    parser.add_argument("--out", help="also write the markdown table here")
    parser.add_argument("--per-trace", action="store_true", help="the markdown table also lists every trace")
    parser.add_argument("--plot", help="draw cost against recall and weight Pearson as a PNG here")
    parser.add_argument("--dry-run", action="store_true", help="tiny random model, ~300 and ~600 tokens, 1 trace")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.lengths, args.traces = [300, 600], [1, 1]
    if len(args.traces) != len(args.lengths):
        parser.error(f"--traces gives {len(args.traces)} counts for {len(args.lengths)} lengths")
    spans = args.max_spans * len(args.lengths) if len(args.max_spans) == 1 else args.max_spans
    if len(spans) != len(args.lengths):
        parser.error(f"--max-spans gives {len(spans)} counts for {len(args.lengths)} lengths")
    logging.getLogger("transformers").setLevel(logging.ERROR)

    scorer = tiny_scorer() if args.dry_run else Scorer.from_pretrained(args.model)
    console.log(f"{scorer.model_id} on {scorer.model.device}, {torch.get_num_threads()} threads")
    setups = settings(args.horizon_windows, args.horizon_tails, args.verify, args.refine_budgets, not args.no_gradient)
    rows = []
    for length, n, max_spans in zip(args.lengths, args.traces, spans, strict=True):
        rows += measure(scorer, build_traces(scorer, length, n, args.seed), setups, max_spans)
        table, markdown = report(rows, args.per_trace)
        # after every length, so a long run that is stopped keeps the lengths it finished
        if args.out:
            with open(args.out, "w", encoding="utf-8") as out:
                out.write(markdown)
        if args.plot:
            plot(rows, args.plot)
    Console(width=220).print(table)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
