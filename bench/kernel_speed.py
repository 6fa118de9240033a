"""Counterfactual passes against plain causal forwards of the same shape, side by side in one run.

    python bench/kernel_speed.py                         # default model, 1k, 4k and 8k tokens
    python bench/kernel_speed.py --lengths 64 128 --repeats 1   # a dry run (seconds)

The case: one trace of n tokens with a single one-token span right after its first token, deleted.
The engine runs its base pass and one counterfactual row that re-feeds nearly the whole trace
over the cached first token, so its work is two decoder forwards of n tokens. The baseline is
exactly that: two plain causal forwards of the decoder (no LM head, SDPA's causal kernel). Each
attention form of the engine ("rows": no dense mask; "dense": the additive mask) is timed on the
same job, the three taking turns in each of `--repeats` rounds; reported: the best of the rounds,
tokens per second (tokens the engine feeds), the ratio to the baseline, and the bytes of mask one
pass builds. Row attention runs the device's default kernel (`ccapo.kernels.DEVICE_KERNEL`);
`--kernels merge fused` times each kernel instead, side by side.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table

from ccapo.engine import Engine
from ccapo.jobs import EngineJob
from ccapo.memory import TokenCosts
from ccapo.models import load_model

console = Console(stderr=True)
COLUMNS = ("tokens", "pass", "seconds", "tokens/s", "vs two plain forwards", "mask bytes per pass")


def synchronize(device: str | torch.device) -> None:
    """Wait for the device's queued work: CUDA returns before its kernels finish, so a timed region
    without this at both ends measures launches, not work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def best_of(
    repeats: int, runs: dict[str, Callable[[], object]], device: str | torch.device = "cpu"
) -> dict[str, float]:
    """Each run's fastest of `repeats` timings after one warm-up, the runs taking turns in every
    round so that a load that changes during the benchmark reaches them all alike; on CUDA each
    timing starts and ends with the device drained."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            synchronize(device)
            start = time.perf_counter()
            run()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def measure(model, length: int, repeats: int, kernels: list[str] | None = None) -> list[list[str]]:
    ids = torch.randint(100, 1000, (length,), generator=torch.Generator().manual_seed(length)).tolist()
    job = EngineJob(ids=ids, answer_start=length - 4, spans=[(1, 2)], intervention="delete", placeholder=0)
    decoder = model.get_decoder()
    tokens = torch.tensor([ids], device=model.device)

    def plain() -> None:
        with torch.inference_mode():
            decoder(input_ids=tokens)
            decoder(input_ids=tokens[:, 1:])

    engines = {"engine, row attention": Engine(model, attention="rows")}
    if kernels:
        engines = {f"engine, row attention ({k})": Engine(model, attention="rows", kernel=k) for k in kernels}
    engines["engine, dense mask"] = Engine(model, attention="dense")
    runs: dict[str, Callable[[], object]] = {"two plain causal forwards": plain}
    runs.update({name: (lambda e=engine: e.score([job])) for name, engine in engines.items()})
    seconds = best_of(repeats, runs, model.device)
    baseline, fed = seconds["two plain causal forwards"], job.exact_feed_tokens
    mask_bytes = {"engine, dense mask": (length - 1) * length * TokenCosts.of(model).mask_element}
    rows = []
    for name, took in seconds.items():
        mask = mask_bytes.get(name, 0)
        rows.append([f"{length:,}", name, f"{took:.2f}", f"{fed / took:,.0f}", f"{took / baseline:.2f}x", f"{mask:,}"])
        console.log(f"{length} tokens, {name}: {took:.2f} s")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", help="default: the bundled SmolLM2-135M")
    parser.add_argument("--out", help="also write the markdown table here")
    parser.add_argument("--kernels", nargs="+", choices=["merge", "fused"], help="row attention's kernels to time")
    args = parser.parse_args(argv)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    model, _ = load_model(args.model)
    console.log(f"{args.model or 'default model'} on {model.device}, {torch.get_num_threads()} threads")
    table = Table(title="counterfactual passes vs plain causal forwards")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "pass" else "right")
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for length in args.lengths:
        for row in measure(model, length, args.repeats, args.kernels):
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
