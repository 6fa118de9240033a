"""The GPU check's sections that run ccapo as users deploy it: the scoring server's throughput (a real server
process on loopback, real HTTP clients) and one training step of the real trainer."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from server_load import load, percentile, server
from train_step import run_arm

from ccapo.gsm import GsmProblem
from gpucheck.plan import Plan

TASK = "gpu_check_gsm"  # the check's problems as a trainer task (registered in-process: no reasoning-gym)


def server_section(directory: Path, plan: Plan, traces: list[dict]) -> list[str]:
    """One-trace requests from 1, 8 and 32 concurrent clients, batched (the defaults) against unbatched."""
    patient = {"CCAPO_REQUEST_TIMEOUT_S": "3600", "CCAPO_MAX_QUEUE_TRACES": str(4 * len(traces))}
    settings = {
        "batched": patient,
        "unbatched": {**patient, "CCAPO_SERVER_BATCH_TOKENS": "1", "CCAPO_MAX_WAIT_MS": "0"},
    }
    device = {"CCAPO_DEVICE": plan.device, "CCAPO_DTYPE": plan.dtype}
    rows = [
        f"{len(traces)} one-trace GSM requests per row, against `python -m ccapo_server` on loopback.",
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
                throughput[setting, clients] = len(traces) / seconds
                rows.append(
                    f"| {setting} | {clients} | {throughput[setting, clients]:.2f} | "
                    f"{percentile(latencies, 50):.3f} | {percentile(latencies, 99):.3f} |"
                )
    top = max(plan.clients)
    ratio = throughput["batched", top] / throughput["unbatched", top]
    return [*rows, "", f"Batched / unbatched at {top} clients: {ratio:.2f}x.", ""]


def train_section(directory: Path, plan: Plan, problems: list[GsmProblem]) -> list[str]:
    """One GRPO step with counterfactual weights from the engine, timed by the trainer's own metrics."""
    from ccapo_trainer.data import Problem, register_task

    register_task(TASK, lambda split, **_: [Problem(p.question, p.answer, p.solution) for p in problems])
    overrides = [f"model={directory}", f"dataset={TASK}", "dataset_kwargs={}", *plan.grpo]
    with tempfile.TemporaryDirectory() as tmp:
        (record,) = run_arm("engine", 1, overrides, Path(tmp))
    score, step = record.get("ccapo/score_seconds", 0.0), record["time/step_s"]
    return [
        f"One step: {' '.join(plan.grpo)}; every sample scored against its reference answer.",
        "",
        "| generate s | score s | update s | step s | scoring share of the step | completion tokens |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {record['time/generate_s']:.2f} | {score:.2f} | {record['time/update_s']:.2f} | {step:.2f} | "
        f"{score / step:.1%} | {record.get('completion_length/mean', 0):.0f} |",
        "",
    ]
