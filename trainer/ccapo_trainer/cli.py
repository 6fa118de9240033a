"""`ccapo train`, `ccapo eval` and `ccapo plot`: the trainer's commands, registered on the `ccapo` parser.

Heavy imports (torch models, datasets, matplotlib) happen inside the commands, so `ccapo --help`
stays fast and works without the [train] extra.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from ccapo_adapters.names import SCORE_SECONDS
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

logger = logging.getLogger("ccapo_trainer")
stderr = Console(stderr=True)


def add_commands(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="GRPO/DAPO training with counterfactual token weights")
    train.add_argument("--config", type=Path, help="YAML config (see configs/); settings not given keep defaults")
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override settings, e.g. steps=10 beta=0.01")
    train.add_argument("--resume", action="store_true", help="continue output_dir's run from its newest checkpoint")
    train.add_argument("--resume-from", type=Path, metavar="CHECKPOINT", help="continue from this checkpoint directory")
    train.set_defaults(run=_train)

    evaluate = sub.add_parser("eval", help="greedy accuracy of a model or checkpoint on held-out problems")
    evaluate.add_argument("--model", help="HF id, local directory or checkpoint's model/ dir (default: bundled model)")
    evaluate.add_argument("--data", default="gsm8k", help="gsm8k, gsm_symbolic, a registered task or a .jsonl/.parquet")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--data-files", nargs="+", help="gsm8k: local files of its schema instead of the hub")
    evaluate.add_argument("-n", type=int, default=200, help="problems (default 200)")
    evaluate.add_argument(
        "--max-new-tokens",
        type=int,
        default=768,
        help="default 768, the paper's completion length; on CPU 256 keeps -n 50 to minutes instead of tens",
    )
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.add_argument("--reward", default="correctness", help="registered reward that marks an answer right")
    evaluate.add_argument("--device")
    evaluate.add_argument("-o", "--output", type=Path, help="also write the result and completions as JSON")
    evaluate.set_defaults(run=_eval)

    experiment = sub.add_parser("experiment", help="the CPU testbed: do the paper's claims hold under control?")
    experiment.add_argument("name", choices=["testbed"], help="which experiment (testbed: docs/testbed.md)")
    experiment.add_argument("--seeds", type=int, default=3, help="RL seeds per arm (default 3)")
    experiment.add_argument("--steps", type=int, help="RL steps per run (default 100)")
    experiment.add_argument(
        "--arms",
        type=lambda text: [arm.strip() for arm in text.split(",")],
        help="comma-separated (default: uniform,counterfactual,inverted,random)",
    )
    experiment.add_argument("--smoke", action="store_true", help="a minute-long run that checks the pipeline only")
    experiment.add_argument("-o", "--output", type=Path, default=Path("runs/testbed"), help="output directory")
    experiment.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="training settings, e.g. learning_rate=5e-5 "
        "counterfactual.scheme=normalized (use a new --output: runs made with other settings are never reused)",
    )
    experiment.set_defaults(run=_experiment)

    plot = sub.add_parser("plot", help="PNG curves (reward, accuracy) and weight histograms of training runs")
    plot.add_argument("runs", nargs="+", type=Path, help="run output directories (each has metrics.jsonl)")
    plot.add_argument("-o", "--output", type=Path, default=Path("plots"), help="directory for the PNGs")
    plot.set_defaults(run=_plot)


def _train(args: argparse.Namespace) -> int:
    from ccapo_trainer.config import ConfigError, load_config
    from ccapo_trainer.loop import Trainer, TrainingError

    try:
        config = load_config(args.config, args.overrides)
        trainer = Trainer(config, resume=args.resume_from or args.resume)
    except (ConfigError, TrainingError, ValueError) as err:
        stderr.print(f"[red]error:[/red] {err}")
        return 2
    with _progress(TextColumn("{task.fields[status]}")) as bar:
        task = bar.add_task("training", total=config.steps, status="", completed=0)

        def on_step(record: dict[str, Any]) -> None:
            status = _status(record)
            bar.update(task, completed=record["step"], status=status)
            _log_unless_terminal("step %d/%d  %s", record["step"], config.steps, status)

        trainer.on_step = on_step
        try:
            result = trainer.train()
        except TrainingError as err:
            stderr.print(f"[red]error:[/red] {err}")
            return 2
    stderr.print(f"{'stopped' if result.interrupted else 'finished'} at step {result.step}: {result.output_dir}")
    return 143 if result.interrupted else 0


def _progress(*extra: TextColumn) -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, TimeRemainingColumn(), *extra, console=stderr)


def _log_unless_terminal(message: str, *args: Any) -> None:
    """Per-step lines for logs (CI, nohup, a cluster's job log), where rich draws no live bar."""
    if not stderr.is_terminal:
        logger.info(message, *args)


def _status(record: dict[str, Any]) -> str:
    parts = []
    for key, label, fmt in (
        ("reward/mean", "reward", "{:.3f}"),
        ("accuracy", "acc", "{:.2f}"),
        ("eval/accuracy", "eval", "{:.3f}"),
        ("loss", "loss", "{:+.4f}"),
        ("time/generate_s", "gen", "{:.1f}s"),
        (SCORE_SECONDS, "score", "{:.1f}s"),
        ("time/update_s", "update", "{:.1f}s"),
    ):
        if key in record:
            parts.append(f"{label} {fmt.format(record[key])}")
    return "  ".join(parts)


def _eval(args: argparse.Namespace) -> int:
    from ccapo.models import load_model
    from ccapo_trainer.data import load_problems
    from ccapo_trainer.evaluate import greedy_accuracy
    from ccapo_trainer.rewards import reward_fn

    kwargs = {"data_files": args.data_files} if args.data_files else {}
    try:
        problems = load_problems(args.data, args.split, **kwargs)[: args.n]
        score = reward_fn(args.reward)
    except (ValueError, FileNotFoundError) as err:
        stderr.print(f"[red]error:[/red] {err}")
        return 2
    with stderr.status(f"loading {args.model or 'the default model'}"):
        model, tokenizer = load_model(args.model, device=args.device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    with stderr.status(f"generating for {len(problems)} problems"):
        result = greedy_accuracy(
            model, tokenizer, problems, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, reward_fn=score
        )
    table = Table(title=f"greedy accuracy on {args.data} ({args.split})")
    for column in ("model", "problems", "correct", "accuracy"):
        table.add_column(column)
    table.add_row(args.model or "default", str(result.total), str(result.correct), f"{result.accuracy:.3f}")
    Console().print(table)
    if args.output:
        rows = [
            {"question": p.question, "answer": p.answer, "completion": c}
            for p, c in zip(problems, result.completions, strict=True)
        ]
        summary = {
            "model": args.model,
            "data": args.data,
            "split": args.split,
            "accuracy": result.accuracy,
            "correct": result.correct,
            "total": result.total,
            "samples": rows,
        }
        args.output.write_text(json.dumps(summary, indent=1))
    return 0


def _experiment(args: argparse.Namespace) -> int:
    import copy
    import dataclasses

    from ccapo_trainer.config import apply_overrides
    from ccapo_trainer.config_aliases import upgrade_override
    from ccapo_trainer.testbed.experiment import ExperimentConfig, run_experiment

    config = ExperimentConfig.smoke() if args.smoke else ExperimentConfig(seeds=tuple(range(args.seeds)))
    try:
        if args.steps:
            config = dataclasses.replace(config, steps=args.steps)
        if args.smoke and args.seeds != 3:
            config = dataclasses.replace(config, seeds=tuple(range(args.seeds)))
        if args.arms:
            config = dataclasses.replace(config, arms=tuple(dict.fromkeys(args.arms)))
        train = apply_overrides(copy.deepcopy(config.train), [upgrade_override(o) for o in args.overrides])
    except ValueError as err:  # ConfigError included
        stderr.print(f"[red]error:[/red] {err}")
        return 2
    config = dataclasses.replace(config, train=train)
    runs = len(config.seeds) * len(config.arms)
    with _progress() as bar:
        task = bar.add_task("testbed", total=runs * config.steps)
        finished: dict[tuple[str, int], int] = {}

        def on_step(arm: str, seed: int, record: dict[str, Any]) -> None:
            finished[arm, seed] = record["step"]
            bar.update(task, completed=sum(finished.values()), description=f"seed {seed} {arm}")
            _log_unless_terminal("seed %d %s step %d/%d  %s", seed, arm, record["step"], config.steps, _status(record))

        try:
            summary = run_experiment(config, args.output, on_step)
        except KeyboardInterrupt as stop:
            stderr.print(f"[yellow]{stop}[/yellow]")
            return 143
        except ValueError as err:
            stderr.print(f"[red]error:[/red] {err}")
            return 2
    for arm, row in summary["arms"].items():
        stderr.print(
            f"{arm:>15}: final held-out accuracy {row['final_mean']:.3f} "
            f"(95% {row['final_ci95'][0]:.3f} to {row['final_ci95'][1]:.3f})"
        )
    stderr.print(f"report: {args.output / 'report.md'}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from ccapo_trainer.plot import plot_runs

    try:
        written = plot_runs(args.runs, args.output)
    except (FileNotFoundError, ValueError) as err:
        stderr.print(f"[red]error:[/red] {err}")
        return 2
    for path in written:
        print(path)
    return 0
