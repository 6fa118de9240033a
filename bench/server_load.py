"""Scoring-server load benchmark: concurrent one-trace clients against a real server.

    python bench/server_load.py [--model DIR] [-n 32] [--clients 1 8 32]
    python bench/server_load.py --mixed [--model DIR] [--rounds 2]
    python bench/server_load.py --abandon [--model DIR] [--rounds 3]

Starts `python -m ccapo_server` on a free loopback port twice, batched (the defaults) and
unbatched (one trace per batch), and has 1, 8 and 32 concurrent clients send one-trace requests.
In the same run it scores the same traces in-process with `ccapo.Scorer` for comparison. Prints
throughput (traces/s) and p50/p99 latency per setting.

`--ray --replicas N` adds rows for the same requests through `ccapo serve --ray` (a local Ray
Serve application with N model replicas sharing this machine's CPUs), beside the single server.

`--mixed` is the abuse run instead: 32 normal clients each send `--rounds` one-trace requests,
once alone and once beside one abusive client that keeps sending the heaviest request the
server's limits allow. It prints the normal clients' p50/p99 latency in both runs, and the
statuses the abuser's requests got.

`--abandon` is issue 22's scenario: a heavy request (4 traces x 40 custom spans) with
`X-Request-Timeout: 2`, then at once one ordinary one-trace request; `--rounds` times. It prints
the ordinary request's latency beside its unloaded latency (the median of three alone).
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
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
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
        # This checkout's ccapo and server, not whichever the environment has installed.
        env={**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(ROOT / "server"), str(ROOT)])},
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


def heaviest_request(limits: dict[str, int], spans: int) -> dict:
    """Traces of ~`n` tokens with `spans` one-word custom spans at the start: each row recomputes ~n
    tokens, so a trace feeds ~n * (spans + 1) tokens, sized to the per-trace limit; as many traces as
    the per-request limit allows."""
    per_trace = limits["max_feed_tokens_per_trace"]
    words = max(spans + 8, per_trace // (spans + 1) - 40)  # " apple" is one token; the prompt takes some
    trace = {
        "prompt": "Count the apples.",
        "completion": "apple " * words + "\n#### 5",
        "spans": [[6 * k, 6 * k + 5] for k in range(spans)],
    }
    count = min(limits["max_traces_per_request"], limits["max_feed_tokens_per_request"] // per_trace)
    return {"traces": [trace] * max(1, count)}


async def abuser_request(http: httpx.AsyncClient, url: str) -> dict:
    """The heaviest request this server accepts: shrink the spans until it is not refused as too costly."""
    limits = (await http.get(f"{url}/v1/model")).json()["limits"]
    spans = limits["max_counterfactuals_per_trace"]
    for _ in range(20):
        body = heaviest_request(limits, spans)
        # One trace probes the price; the server refuses it with a 422 before any model work if over.
        response = await http.post(f"{url}/v1/importance", json={"traces": body["traces"][:1]}, timeout=600)
        if response.status_code == 200:
            return body
        spans = int(spans * 0.9)
    raise RuntimeError(f"no heavy request fits this server's limits: {response.text}")


async def fed_tokens(http: httpx.AsyncClient, url: str) -> float:
    """Feed tokens the server's batches have held so far (its ccapo_server_batch_tokens histogram)."""
    for family in text_string_to_metric_families((await http.get(f"{url}/metrics")).text):
        for sample in family.samples:
            if sample.name == "ccapo_server_batch_tokens_sum":
                return sample.value
    return 0.0


async def mixed_load(
    url: str, traces: list[dict], clients: int, rounds: int, abuse: bool
) -> tuple[list[float], Counter[str], float]:
    """Normal clients' latencies, the statuses the abuser's heavy requests got meanwhile, and the
    abuser's share of the feed tokens the engine ran during the normal clients' run."""
    latencies: list[float] = []
    normal_tokens = 0
    statuses: Counter[str] = Counter()
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients + 1)) as http:
        heavy = await abuser_request(http, url) if abuse else None
        normal_done = asyncio.Event()

        async def normal(k: int) -> None:
            nonlocal normal_tokens
            for r in range(rounds):
                trace = traces[(k * rounds + r) % len(traces)]
                start = time.perf_counter()
                response = await http.post(f"{url}/v1/importance", json={"traces": [trace]}, timeout=3600)
                response.raise_for_status()
                latencies.append(time.perf_counter() - start)
                normal_tokens += response.json()["usage"]["forward_tokens"]

        async def abuser() -> None:
            while not normal_done.is_set():
                try:
                    response = await http.post(f"{url}/v1/importance", json=heavy, timeout=3600)
                    statuses[str(response.status_code)] += 1
                except httpx.TimeoutException:  # a slow machine: send the next
                    statuses["client timeout"] += 1
                except asyncio.CancelledError:
                    statuses["unfinished when the normal clients were done"] += 1
                    raise

        abusing = asyncio.create_task(abuser()) if abuse else None
        if abusing is not None:
            await asyncio.sleep(1.0)  # the abuser's work is queued and running before the normal clients start
        before = await fed_tokens(http, url)
        await asyncio.gather(*(normal(k) for k in range(clients)))
        fed = await fed_tokens(http, url) - before
        normal_done.set()
        if abusing is not None:
            abusing.cancel()  # its client goes away; the server drops the rest of its work
            with contextlib.suppress(asyncio.CancelledError):
                await abusing
    return latencies, statuses, max(0.0, 1 - normal_tokens / fed) if fed else 0.0


def mixed(model: str, rounds: int, seed: int, console: Console) -> None:
    clients = 32
    traces = [t.model_dump(exclude_none=True) for t in gsm_traces(clients * rounds, seed)]
    table = Table(title=f"{clients} normal clients x {rounds} one-trace requests, {model}")
    for column in ("run", "normal p50 s", "normal p99 s", "abuser's share of engine work", "abuser's statuses"):
        table.add_column(column, justify="right")
    with server(model, {"CCAPO_REQUEST_TIMEOUT_S": "3600"}) as url:
        for abuse in (False, True):
            latencies, statuses, share = asyncio.run(mixed_load(url, traces, clients, rounds, abuse))
            name = "with 1 abuser" if abuse else "alone"
            p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
            got = ", ".join(f"{status} x{n}" for status, n in sorted(statuses.items())) or "none answered"
            table.add_row(name, f"{p50:.2f}", f"{p99:.2f}", f"{share:.0%}" if abuse else "-", got if abuse else "-")
            console.log(f"{name}: p50 {p50:.2f} s, p99 {p99:.2f} s")
    console.print(table)


def abandon(model: str, rounds: int, seed: int, console: Console) -> None:
    """Issue 22's scenario: how long an ordinary request waits right after a heavy one is abandoned at its deadline."""
    trace = gsm_traces(1, seed)[0].model_dump(exclude_none=True)
    table = Table(title=f"an ordinary request right after an abandoned heavy one (4 traces x 40 spans, 2 s), {model}")
    for column in ("round", "heavy status", "heavy s", "ordinary s", "unloaded s", "ratio"):
        table.add_column(column, justify="right")
    with server(model, {}) as url, httpx.Client(timeout=3600) as http:
        limits = http.get(f"{url}/v1/model").json()["limits"]
        heavy = {"traces": heaviest_request(limits, spans=40)["traces"][:4]}

        def ordinary_s() -> float:
            start = time.perf_counter()
            http.post(f"{url}/v1/importance", json={"traces": [trace]}).raise_for_status()
            return time.perf_counter() - start

        ordinary_s()  # warm-up
        unloaded = statistics.median(ordinary_s() for _ in range(3))
        for r in range(rounds):
            start = time.perf_counter()
            response = http.post(f"{url}/v1/importance", json=heavy, headers={"X-Request-Timeout": "2"})
            heavy_s = time.perf_counter() - start
            after = ordinary_s()
            table.add_row(
                str(r + 1), str(response.status_code), f"{heavy_s:.1f}", f"{after:.2f}", f"{unloaded:.2f}",
                f"{after / unloaded:.2f}",
            )  # fmt: skip
            console.log(f"round {r + 1}: heavy {response.status_code} in {heavy_s:.1f} s, then ordinary {after:.2f} s")
            time.sleep(1.0)  # the server settles before the next round
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model dir or id (default: the bundled SmolLM2-135M)")
    parser.add_argument("-n", type=int, default=32, help="traces per setting")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mixed", action="store_true", help="the abuse run: 32 normal clients beside one abuser")
    parser.add_argument("--abandon", action="store_true", help="an ordinary request after an abandoned heavy one")
    parser.add_argument("--rounds", type=int, help="--mixed: requests per normal client (2); --abandon: rounds (3)")
    parser.add_argument("--ray", action="store_true", help="also serve through Ray Serve (ccapo serve --ray)")
    parser.add_argument("--replicas", type=int, default=2, help="--ray: model replicas")
    args = parser.parse_args()
    model = resolve_model(args.model)
    console = Console(width=110)
    if args.mixed:
        mixed(model, args.rounds or 2, args.seed, console)
        return
    if args.abandon:
        abandon(model, args.rounds or 3, args.seed, console)
        return
    traces = [t.model_dump(exclude_none=True) for t in gsm_traces(args.n, args.seed)]

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
        "unbatched": {**patient, "CCAPO_SERVER_BATCH_TOKENS": "1", "CCAPO_MAX_WAIT_MS": "0"},
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
