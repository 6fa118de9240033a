"""The `ccapo` command: demo, score, render, bench, faithfulness, models, serve; train, eval, plot."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ccapo.config import PRESETS, ScoringConfig
from ccapo.estimators import ESTIMATORS
from ccapo.interventions import INTERVENTIONS
from ccapo.scorer import Scorer, TraceError
from ccapo.trace import Trace

logger = logging.getLogger("ccapo")
stderr = Console(stderr=True)
SEGMENTERS = ("calc", "sentence", "line", "window")
SCHEMES = ("paper", "normalized", "uniform", "inverted", "random")
CHUNK = 64  # traces scored per call in `ccapo score`, so output streams and progress moves


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    own_argv = _command_with_own_argv(parser, argv[:1])
    if own_argv is not None:  # e.g. `ccapo serve`: the server parses its own flags
        return own_argv(argv[1:])
    args, extra = parser.parse_known_args(argv)
    # argparse leaves KEY=VALUE overrides that follow an option after a first positional unmatched
    # (`ccapo experiment testbed --arms uniform lr=1e-5`); they are still overrides, checked later.
    if extra and isinstance(getattr(args, "overrides", None), list) and not any(e.startswith("-") for e in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=stderr, show_path=False)],
    )
    for name in {"ccapo", *(entry.module.split(".")[0] for entry in _command_entry_points())}:
        logging.getLogger(name).setLevel(logging.INFO)
    if not args.verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # our own progress display is enough
    return args.run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ccapo", description="Counterfactual span importance for reasoning traces.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log from transformers and friends too")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="score the bundled example traces and show them")
    _model_args(demo)
    _scoring_args(demo)
    demo.set_defaults(run=_demo)

    score = sub.add_parser("score", help="score a JSONL file of traces")
    score.add_argument("traces", type=Path, help="JSONL, one trace object per line ('-' for stdin)")
    score.add_argument("-o", "--output", type=Path, help="JSONL of results, one per input line (default: stdout)")
    score.add_argument(
        "--pretty", action="store_true", help="show spans colored by drop in the terminal (instead of JSON without -o)"
    )
    _model_args(score)
    _scoring_args(score)
    score.set_defaults(run=_score)

    render = sub.add_parser("render", help="draw scored results as a standalone HTML page (and a PNG)")
    render.add_argument("results", type=Path, help="JSONL of results, as `ccapo score` writes ('-' for stdin)")
    render.add_argument("-o", "--output", type=Path, required=True, help="the HTML file to write")
    render.add_argument("--png", type=Path, help="also a picture of the page (needs Chromium)")
    render.add_argument("--title", help="the page's title (default: the results file's name)")
    render.set_defaults(run=_render)

    bench = sub.add_parser("bench", help="the fast engine against the naive reference on gsm_symbolic traces")
    bench.add_argument("-n", type=int, default=32, help="traces (default 32)")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--no-reference", action="store_true", help="skip the (slow) naive reference")
    bench.add_argument(
        "--estimator",
        choices=ESTIMATORS,
        default="exact",
        help="also time an approximate estimator on the same traces and compare its drops with exact's",
    )
    _model_args(bench)
    _scoring_args(bench)
    bench.set_defaults(run=_bench)

    faith = sub.add_parser("faithfulness", help="do calculation lines out-score planted filler lines?")
    faith.add_argument("-n", type=int, default=30, help="traces (default 30)")
    faith.add_argument("--seed", type=int, default=0)
    faith.add_argument("--fillers", type=int, default=2, help="filler lines planted per trace")
    faith.add_argument("--interventions", nargs="+", choices=INTERVENTIONS, default=list(INTERVENTIONS))
    faith.add_argument(
        "--estimators",
        nargs="+",
        choices=ESTIMATORS,
        default=["exact"],
        help="approximate estimators to score beside exact, with their agreement with exact's drops",
    )
    _model_args(faith)
    faith.set_defaults(run=_faithfulness)

    for entry in _command_entry_points():  # serve, train, eval, plot, ...: registered by their packages
        try:
            add_commands = entry.load()
        except ImportError as err:  # e.g. the server image, which has no trainer: say so when it is asked for
            unavailable = sub.add_parser(entry.name, help=f"unavailable here ({err.name or err})")
            unavailable.set_defaults(own_argv=lambda _argv, entry=entry, err=err: _unavailable(entry, err))
            continue
        add_commands(sub)

    models = sub.add_parser("models", help="show the converted models in the cache")
    models.set_defaults(run=_models)
    return parser


def _model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", help="HF hub id, local directory or .gguf file (default: bundled SmolLM2-135M)")
    group.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    group.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="default: fp32 on CPU, bf16 on GPU")
    group.add_argument("--trust-remote-code", action="store_true")
    group.add_argument(
        "--engine-batch-tokens",
        "--max-batch-tokens",  # its first name, kept: the server's batch budget is another thing
        dest="max_batch_tokens",
        metavar="TOKENS",
        type=int,
        help="padded tokens per engine forward pass",
    )


def _scoring_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scoring")
    group.add_argument(
        "--preset",
        choices=PRESETS,
        help='"aligntune": what the authors\' released code computes (their segmenter, answer window, pad-id '
        "mask and weights); it fixes --segmenter, --intervention, --target and --placeholder",
    )
    # Unset flags stay out of the config, so its defaults (or the preset's) apply.
    group.add_argument("--segmenter", choices=SEGMENTERS, help="default: calc")
    group.add_argument("--intervention", choices=INTERVENTIONS, help=f"default: {ScoringConfig().intervention}")
    group.add_argument("--target", choices=("completion", "reference"), help="default: completion")
    group.add_argument("--max-spans", type=int, default=10)
    group.add_argument("--placeholder", help='"pad" intervention: replacement token text')
    group.add_argument("--scheme", choices=SCHEMES, help="token weight scheme (default: the weight config's)")


def _config(args: argparse.Namespace) -> ScoringConfig:
    given = {name: getattr(args, name) for name in ("preset", "segmenter", "intervention", "target", "placeholder")}
    try:
        return ScoringConfig(
            **{name: value for name, value in given.items() if value is not None},
            max_spans=args.max_spans,
            weights={"scheme": args.scheme} if args.scheme else {},
        )
    except ValidationError as err:  # e.g. --preset with an --intervention it fixes
        raise SystemExit(f"ccapo: error: {err.errors()[0]['msg'].removeprefix('Value error, ')}") from None


def _load(args: argparse.Namespace) -> Scorer:
    with stderr.status(f"loading {args.model or 'the default model'}"):
        return Scorer.from_pretrained(
            args.model,
            device=args.device,
            dtype=args.dtype,
            trust_remote_code=args.trust_remote_code,
            max_batch_tokens=args.max_batch_tokens,
        )


@contextmanager
def _progress(description: str, total: int) -> Iterator[Any]:
    """A progress bar on stderr; yields a callback that sets how many of `total` are done."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=stderr, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.update(task, completed=done)


def _demo(args: argparse.Namespace) -> int:
    from ccapo.display import render_importance
    from ccapo.examples import load_examples

    scorer = _load(args)
    traces = load_examples()
    with _progress("scoring examples", len(traces)) as set_done:
        results = scorer.score(traces, _config(args), progress=lambda done, total: set_done(done))
    render_importance(results, Console())
    return 0


def _read_traces(stream: TextIO) -> Iterator[tuple[int, Trace | str]]:
    """(line number, trace or error message) for each non-blank line."""
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            yield number, Trace.model_validate(json.loads(line))
        except json.JSONDecodeError as err:
            yield number, f"not valid JSON: {err}"
        except ValidationError as err:
            yield number, "; ".join(f"{'.'.join(map(str, e['loc'])) or 'trace'}: {e['msg']}" for e in err.errors())


def _score(args: argparse.Namespace) -> int:
    config = _config(args)
    stream = sys.stdin if str(args.traces) == "-" else args.traces.open(encoding="utf-8")
    with stream:
        lines = list(_read_traces(stream))
    scorer = _load(args)
    # Without -o the JSON goes to stdout, which is not ours to close; --pretty then replaces it.
    out = args.output.open("w", encoding="utf-8") if args.output else nullcontext(sys.stdout)
    failed = 0
    shown = []
    with out as sink, _progress("scoring", len(lines)) as set_done:
        for start in range(0, len(lines), CHUNK):
            chunk = lines[start : start + CHUNK]
            records = _score_chunk(scorer, chunk, config)
            for (number, _), record in zip(chunk, records, strict=True):
                if "error" in record:
                    failed += 1
                    stderr.print(f"[red]line {number}:[/red] {record['error']}")
                elif args.pretty:
                    shown.append(record)
                if args.output or not args.pretty:
                    sink.write(json.dumps(record, ensure_ascii=False) + "\n")
            set_done(start + len(chunk))
    if args.pretty:
        from ccapo.display import render_importance
        from ccapo.result import TraceImportance

        render_importance([TraceImportance.from_dict(r) for r in shown], Console())
    if failed:
        stderr.print(f"[yellow]{failed} of {len(lines)} lines failed; the rest were scored[/yellow]")
    return 1 if failed else 0


def _score_chunk(scorer: Scorer, chunk: list[tuple[int, Trace | str]], config: ScoringConfig) -> list[dict]:
    """Results for a chunk of lines; a bad trace gets an error record and never fails the others."""
    records: list[dict | None] = [{"line": n, "error": t} if isinstance(t, str) else None for n, t in chunk]
    while True:
        pending = [i for i, r in enumerate(records) if r is None]
        try:
            results = scorer.score([chunk[i][1] for i in pending], config)
        except TraceError as err:  # raised before any model work: drop that trace and go again
            i = pending[err.trace_index]
            records[i] = {"line": chunk[i][0], "error": err.detail}
            continue
        for i, result in zip(pending, results, strict=True):
            records[i] = result.to_dict()
        return records  # type: ignore[return-value]


def _read_results(stream: TextIO) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, result dict or why the line is not a result) for each non-blank line."""
    from ccapo.result import TraceImportance

    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            yield number, f"not valid JSON: {err}"
            continue
        if isinstance(record, dict) and "error" in record:
            yield number, f"an error record, not a result: {record['error']}"
            continue
        try:  # a round trip through the dataclass checks every field is there
            yield number, TraceImportance.from_dict(record).to_dict()
        except (TypeError, ValueError) as err:
            yield number, f"not a scoring result: {err}"


def _render(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from ccapo.render import render_report, write_png

    stream = sys.stdin if str(args.results) == "-" else args.results.open(encoding="utf-8")
    results: list[dict[str, Any]] = []
    labels: list[str] = []
    with stream:
        for number, record in _read_results(stream):
            if isinstance(record, str):  # escaped: messages quote JSON, whose brackets rich would take for markup
                stderr.print(f"[yellow]line {number} skipped:[/yellow] {escape(record)}")
            else:
                results.append(record)
                labels.append(f"line {number}")
    if not results:
        stderr.print(f"[red]no results to render in {args.results}[/red]")
        return 1
    title = args.title or f"ccapo: {'stdin' if str(args.results) == '-' else args.results.name}"
    args.output.write_text(render_report(results, title, labels), encoding="utf-8")
    stderr.print(f"wrote {len(results)} results to {args.output}")
    if args.png:
        try:
            write_png(args.output, args.png)
        except RuntimeError as err:  # ChromiumNotFound included
            stderr.print(f"[red]no PNG:[/red] {escape(str(err))}")
            return 1
        stderr.print(f"wrote a picture of it to {args.png}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from ccapo.benchmark import run_benchmark

    scorer = _load(args)
    with stderr.status(f"benchmarking on {args.n} gsm_symbolic traces"):
        result = run_benchmark(
            scorer, args.n, args.seed, _config(args), reference=not args.no_reference, estimator=args.estimator
        )
    table = Table(title=f"{scorer.model_id} on {scorer.model.device} ({scorer.model.dtype}), {result.traces} traces")
    for column in ("engine", "traces/s", "tokens/s", "seconds", "counterfactuals", "tokens fed"):
        table.add_column(column, justify="right")
    for timing in (result.reference, result.engine, result.estimate):
        if timing is not None:
            table.add_row(
                timing.name,
                f"{timing.traces_per_s(result.traces):.2f}",
                f"{timing.tokens_per_s:,.0f}",
                f"{timing.seconds:.1f}",
                str(timing.counterfactuals),
                f"{timing.forward_tokens:,}",
            )
    console = Console(width=max(Console().width, 100))
    console.print(table)
    if result.speedup is not None:
        console.print(f"speedup over the naive reference: [bold]{result.speedup:.2f}x[/bold]")
        console.print(f"largest drop difference, engine vs reference: {result.max_abs_drop_diff:.2e}")
    if result.estimate is not None and result.agreement is not None:
        found = result.agreement
        console.print(
            f"{found.estimator} against the exact engine: [bold]{result.estimate_speedup:.2f}x[/bold] faster; "
            f"Spearman {found.spearman:.3f}, top-3 overlap {found.top_overlap:.3f}, "
            f"same top 3 on {found.top_match:.0%} of {found.traces} traces"
        )
    rows, width = result.plain_shape
    console.print(f"plain forward throughput at ({rows} x {width}): {result.plain_tokens_per_s:,.0f} tokens/s")
    console.print(f"efficiency (needed tokens / plain throughput / engine time): [bold]{result.efficiency:.2f}[/bold]")
    return 0


def _faithfulness(args: argparse.Namespace) -> int:
    from ccapo.faithfulness import faithfulness_table, run_faithfulness

    scorer = _load(args)
    rows = run_faithfulness(
        scorer, args.n, args.seed, args.fillers, args.interventions, progress=stderr.log, estimators=args.estimators
    )
    table = faithfulness_table(rows)
    table.title = f"{scorer.model_id}: {args.n} gsm_symbolic traces, {args.fillers} filler lines each, seed {args.seed}"
    Console(width=max(Console().width, 120)).print(table)
    return 0


def _command_entry_points() -> list[metadata.EntryPoint]:
    """Subcommands other packages add (`ccapo.commands`: a callable that takes the subparsers)."""
    return sorted(metadata.entry_points(group="ccapo.commands"), key=lambda entry: entry.name)


def _unavailable(entry: metadata.EntryPoint, err: ImportError) -> int:
    stderr.print(f"[red]`ccapo {entry.name}` cannot be loaded here:[/red] {err} (registered as {entry.value})")
    return 2


def _command_with_own_argv(parser: argparse.ArgumentParser, first: list[str]) -> Callable[[list[str]], int] | None:
    """The command named by `first` if it parses its own flags (its parser sets `own_argv`)."""
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        command = action.choices.get(first[0]) if first else None
        if command is not None:
            return command.get_default("own_argv")
    return None


def _models(args: argparse.Namespace) -> int:
    from ccapo.models import DEFAULT_MODEL, cache_dir, cached_models

    console = Console()
    console.print(f"cache: {cache_dir()}  (set CCAPO_CACHE to move it)")
    table = Table("name", "size", "path")
    for model in cached_models():
        name = f"{model.name} (default)" if model.name == DEFAULT_MODEL else model.name
        table.add_row(name, f"{model.size_bytes / 2**20:,.0f} MiB", str(model.path))
    console.print(table if table.rows else "no converted models yet; the default is fetched on first use")
    return 0


if __name__ == "__main__":
    sys.exit(main())
