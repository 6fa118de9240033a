"""Scoring-server load benchmark: concurrent one-trace clients against a real server.

    python bench/server_load.py [--model DIR] [-n 32] [--clients 1 8 32]

Starts `python -m ccapo_server` on a free loopback port twice, batched (the defaults) and
unbatched (one trace per batch), and has 1, 8 and 32 concurrent clients send one-trace requests.
In the same run it scores the same traces in-process with `ccapo.Scorer` for comparison. Prints
throughput (traces/s) and p50/p99 latency per setting.

`--ray --replicas N` adds rows for the same requests through `ccapo serve --ray` (a local Ray
Serve application with N model replicas sharing this machine's CPUs), beside the single server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from ccapo import Scorer
from ccapo.gsm import gsm_traces
from ccapo.models import resolve_model

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server(model: str, env: dict[str, str], flags: Sequence[str] = ()) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccapo_server", "--model", model, "--host", "127.0.0.1", "--port", str(port), *flags],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT / "server")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}")
            time.sleep(0.5)
        else:
            raise RuntimeError("the server did not become ready")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


async def load(url: str, traces: list[dict], clients: int) -> tuple[float, list[float]]:
    """Each client sends one-trace requests from a shared list until it is empty."""
    pending = list(enumerate(traces))
    latencies: list[float] = []

    async def client(http: httpx.AsyncClient) -> None:
        while pending:
            _, trace = pending.pop()
            start = time.perf_counter()
            response = await http.post(f"{url}/v1/importance", json={"traces": [trace]}, timeout=600)
            response.raise_for_status()
            latencies.append(time.perf_counter() - start)

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients)) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return time.perf_counter() - start, latencies


def hop_ms(url: str, requests: int = 50) -> float:
    """Median milliseconds of `GET /v1/model`, one request at a time: what reaching the app costs, no model work."""
    latencies = []
    with httpx.Client() as http:
        for _ in range(requests):
            start = time.perf_counter()
            http.get(f"{url}/v1/model").raise_for_status()
            latencies.append(time.perf_counter() - start)
    return 1000 * statistics.median(latencies)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model dir or id (default: the bundled SmolLM2-135M)")
    parser.add_argument("-n", type=int, default=32, help="traces per setting")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ray", action="store_true", help="also serve through Ray Serve (ccapo serve --ray)")
    parser.add_argument("--replicas", type=int, default=2, help="--ray: model replicas")
    args = parser.parse_args()
    model = resolve_model(args.model)
    traces = [t.model_dump(exclude_none=True) for t in gsm_traces(args.n, args.seed)]
    console = Console(width=110)

    scorer = Scorer.from_pretrained(model)
    scorer.score(traces[:2])  # warm-up
    start = time.perf_counter()
    scorer.score(traces)
    in_process = args.n / (time.perf_counter() - start)
    console.log(f"in-process: {in_process:.2f} traces/s")
    del scorer

    table = Table(title=f"scoring server, {args.n} one-trace requests per row, {model}")
    for column in ("server", "clients", "traces/s", "vs in-process", "p50 s", "p99 s"):
        table.add_column(column, justify="right")
    table.add_row("in-process", "-", f"{in_process:.2f}", "1.00", "-", "-")
    # One-trace batches queue up behind each other: give requests time instead of a 504.
    patient = {"CCAPO_REQUEST_TIMEOUT_S": "3600", "CCAPO_MAX_QUEUE_TRACES": str(4 * args.n)}
    settings = {
        "batched": patient,
        "unbatched": {**patient, "CCAPO_MAX_BATCH_TOKENS": "1", "CCAPO_MAX_WAIT_MS": "0"},
    }
    # The replicas share this machine's CPUs: on 2 cores they add no throughput, and show what routing costs.
    replica_cpus = min(1.0, (os.cpu_count() or 1) / args.replicas)
    ray_flags = ["--ray", "--replicas", str(args.replicas), "--replica-cpus", f"{replica_cpus:g}"]
    if args.ray:
        settings[f"ray x{args.replicas}"] = patient
    hops: dict[str, float] = {}
    for name, env in settings.items():
        with server(model, env, ray_flags if name.startswith("ray") else ()) as url:
            hops[name] = hop_ms(url)
            for clients in args.clients if name != "unbatched" else [max(args.clients)]:
                seconds, latencies = asyncio.run(load(url, traces, clients))
                throughput = args.n / seconds
                table.add_row(
                    name,
                    str(clients),
                    f"{throughput:.2f}",
                    f"{throughput / in_process:.2f}",
                    f"{percentile(latencies, 50):.2f}",
                    f"{percentile(latencies, 99):.2f}",
                )
                console.log(f"{name}, {clients} clients: {throughput:.2f} traces/s")
    console.print(table)
    console.print("GET /v1/model, median ms: " + ", ".join(f"{name} {ms:.1f}" for name, ms in hops.items()))


if __name__ == "__main__":
    main()
