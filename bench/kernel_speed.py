"""Counterfactual passes against plain causal forwards of the same shape, side by side in one run.

    python bench/kernel_speed.py                         # default model, 1k, 4k and 8k tokens
    python bench/kernel_speed.py --lengths 64 128 --repeats 1   # a dry run (seconds)

The case: one trace of n tokens with a single one-token span right after its first token, deleted.
The engine runs its base pass and one counterfactual row that re-feeds nearly the whole trace
over the cached first token, so its work is two decoder forwards of n tokens. The baseline is
exactly that: two plain causal forwards of the decoder (no LM head, SDPA's causal kernel). Each
attention form of the engine ("rows": no dense mask; "dense": the additive mask) is timed on the
same job; reported: the best of `--repeats` runs, tokens per second, the ratio to the baseline,
and the bytes of mask one pass builds.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import torch
from rich.console import Console
from rich.table import Table

from ccapo.engine import Engine, EngineJob
from ccapo.memory import TokenCosts
from ccapo.models import load_model

console = Console(stderr=True)
COLUMNS = ("tokens", "pass", "seconds", "tokens/s", "vs two plain forwards", "mask bytes per pass")


def best_of(repeats: int, run) -> float:
    """The fastest of `repeats` runs after one warm-up: the machine is shared and noisy."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(model, length: int, repeats: int) -> list[list[str]]:
    ids = torch.randint(100, 1000, (length,), generator=torch.Generator().manual_seed(length)).tolist()
    job = EngineJob(ids=ids, answer_start=length - 4, spans=[(1, 2)], intervention="delete", placeholder=0)
    decoder = model.get_decoder()
    tokens = torch.tensor([ids], device=model.device)

    def plain() -> None:
        with torch.inference_mode():
            decoder(input_ids=tokens)
            decoder(input_ids=tokens[:, 1:])

    baseline = best_of(repeats, plain)
    fed = job.exact_feed_tokens
    rows = [[f"{length:,}", "two plain causal forwards", f"{baseline:.2f}", f"{fed / baseline:,.0f}", "1.00x", "0"]]
    mask_element = TokenCosts.of(model).mask_element
    for attention in ("rows", "dense"):
        engine = Engine(model, attention=attention)
        seconds = best_of(repeats, lambda engine=engine: engine.score([job]))
        mask = 0 if attention == "rows" else (length - 1) * length * mask_element
        name = "engine, row attention" if attention == "rows" else "engine, dense mask"
        ratio = f"{seconds / baseline:.2f}x"
        rows.append([f"{length:,}", name, f"{seconds:.2f}", f"{fed / seconds:,.0f}", ratio, f"{mask:,}"])
        console.log(f"{length} tokens, {attention}: {seconds:.2f} s vs {baseline:.2f} s")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", help="default: the bundled SmolLM2-135M")
    parser.add_argument("--out", help="also write the markdown table here")
    args = parser.parse_args(argv)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    model, _ = load_model(args.model)
    console.log(f"{args.model or 'default model'} on {model.device}, {torch.get_num_threads()} threads")
    table = Table(title="counterfactual passes vs plain causal forwards")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "pass" else "right")
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for length in args.lengths:
        for row in measure(model, length, args.repeats):
            table.add_row(*row)
            lines.append("| " + " | ".join(row) + " |")
    Console(width=200).print(table)
    markdown = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            out.write(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
