"""What the processes of a multi-process run (`accelerate launch --num_processes N`) share.

Every process rolls out, rewards and scores its own prompts and back-propagates its own samples;
DDP averages the gradients. The helpers here make the rest global: the step's metrics are computed
over every process's samples, the decisions that steer collective calls (sample another round, skip
the update, stop) are taken by all processes together, and checkpoints keep each process's random
state. With one process every helper is a plain local computation (no collective call).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object, get_int_from_env
from ccapo_adapters.names import WEIGHT_HISTOGRAM, namespaced

from ccapo_trainer.metrics import weight_histogram
from ccapo_trainer.rollout import pad_right


class LaunchError(RuntimeError):
    """The processes were not launched as one distributed run."""


def launched_accelerator(mixed_precision: str) -> Accelerator:
    """The run's `Accelerator`; processes launched together on a machine without a GPU train on CPU over gloo.

    `accelerate launch --cpu --num_processes N` starts a single process unless mpirun launches it,
    and processes that each think they run alone would overwrite each other's files: both refuse.
    """
    launched = get_int_from_env(["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"], 1)
    on_cpu = launched > 1 and not torch.accelerator.is_available()
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=on_cpu)
    if accelerator.num_processes != launched:
        raise LaunchError(
            f"{launched} processes were launched, but each one trains alone: launch them with "
            "`accelerate launch --multi_gpu --num_processes N` or `torchrun --nproc_per_node N`"
        )
    cpu_launcher = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    if cpu_launcher and "MASTER_ADDR" in os.environ and launched == 1:
        raise LaunchError(
            "accelerate launch --cpu --num_processes N started one process (it needs mpirun for more): "
            "use `accelerate launch --multi_gpu --num_processes N -m ccapo_trainer ...`, which trains on CPU "
            "over gloo where there is no GPU, or leave out --num_processes to train in one process"
        )
    return accelerator


class Processes:
    """Collective helpers for one `Accelerator`."""

    def __init__(self, accelerator: Accelerator):
        self.accelerator = accelerator
        self.count = accelerator.num_processes
        self.rank = accelerator.process_index
        self.is_main = accelerator.is_main_process

    def gather(self, value: Any) -> list[Any]:
        """Every process's `value` (any picklable object), in process order, on every process."""
        return [value] if self.count == 1 else gather_object([value])

    def values(self, numbers: list[float]) -> torch.Tensor:
        """(processes, len(numbers)): every process's numbers, on every process."""
        local = torch.tensor([numbers], dtype=torch.float64, device=self.accelerator.device)
        return local if self.count == 1 else self.accelerator.gather(local).cpu()

    def most(self, number: float) -> float:
        return float(self.values([number]).max())

    def fewest(self, number: float) -> float:
        return float(self.values([number]).min())

    def total(self, number: float) -> float:
        return float(self.values([number]).sum())

    def from_main(self, value: Any) -> Any:
        """The main process's `value` on every process; the others wait for it."""
        if self.count == 1:
            return value
        return broadcast_object_list([value])[0]

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()


# -- step metrics over every process's samples ------------------------------------------------------


@dataclass
class RolloutStats:
    """One process's rollouts of a step, as much as its metrics need."""

    rewards: torch.Tensor  # (samples,) of every group seen, kept or dropped
    correct: torch.Tensor  # (samples,) bool
    lengths: torch.Tensor  # (samples,) completion tokens
    truncated: torch.Tensor  # (samples,) bool
    zero_variance: list[bool]  # per group seen
    kept: int
    rounds: int
    reward_failures: int
    generate_s: float
    completions: list[dict[str, Any]] = field(default_factory=list)  # `log_completions`: problem, text, reward


def rollout_metrics(stats: list[RolloutStats]) -> dict[str, Any]:
    """Rollout metrics over all processes' samples; `time/generate_s` is the slowest process's."""
    timing = {"rounds": max(s.rounds for s in stats), "time/generate_s": max(s.generate_s for s in stats)}
    groups = sum(len(s.zero_variance) for s in stats)
    if not groups:
        return timing
    rewards = torch.cat([s.rewards for s in stats])
    lengths = torch.cat([s.lengths for s in stats]).float()
    return {
        "reward/mean": float(rewards.mean()),
        "reward/std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
        "accuracy": float(torch.cat([s.correct for s in stats]).float().mean()),
        "zero_variance_share": sum(sum(s.zero_variance) for s in stats) / groups,
        "groups/generated": groups,
        "groups/kept": sum(s.kept for s in stats),
        "rounds": timing["rounds"],
        "completion_length/mean": float(lengths.mean()),
        "completion_length/max": float(lengths.max()),
        "truncated_share": float(torch.cat([s.truncated for s in stats]).float().mean()),
        "reward/failed": sum(s.reward_failures for s in stats),
        "time/generate_s": timing["time/generate_s"],
    }


class _Span(NamedTuple):
    token_start: int
    token_end: int
    kind: str


class _Outcome(NamedTuple):
    """What `BatchWeights.metrics` reads of a scorer's result: its status and its spans."""

    status: str | None
    spans: tuple[_Span, ...]


def weight_metrics(processes: Processes, batch: Any, mask: torch.Tensor) -> dict[str, Any]:
    """`batch.metrics(mask)` and the weight histogram over every process's rows, named as the adapters name them.

    `batch` is the adapters' `BatchWeights`; a process sends only its weights, mask, each row's
    status and spans, and its trace counts, and the metrics are computed from all processes' rows as one batch.
    """
    if processes.count == 1:
        return {**namespaced(batch.metrics(mask)), WEIGHT_HISTOGRAM: weight_histogram(batch.weights, mask)}
    outcomes = [
        _Outcome(
            getattr(result, "status", None),
            tuple(_Span(s.token_start, s.token_end, s.kind) for s in getattr(result, "spans", None) or ()),
        )
        for result in batch.results
    ]
    parts = processes.gather((batch.weights.cpu(), mask.cpu(), outcomes, batch.errors, batch.traces, batch.duplicates))
    width = max(part[0].shape[1] for part in parts)
    weights = torch.cat([pad_right(part[0], width, 1.0) for part in parts])
    masks = torch.cat([pad_right(part[1], width, 0) for part in parts])
    results = [outcome for part in parts for outcome in part[2]]
    errors = [error for part in parts for error in part[3]]
    traces, duplicates = sum(part[4] for part in parts), sum(part[5] for part in parts)
    merged = type(batch)(weights, results, errors, traces=traces, duplicates=duplicates)
    return {**namespaced(merged.metrics(masks)), WEIGHT_HISTOGRAM: weight_histogram(weights, masks)}


def update_metrics(processes: Processes, totals: dict[str, float]) -> dict[str, float]:
    """The update's metrics for the whole batch: every process weighted its micro-batches by their
    share of the global batch, so the shares add up across processes. The gradient norm and skip
    count are the same on every process (they follow the all-reduced gradients)."""
    if processes.count == 1:
        return totals
    keys = sorted(totals)
    summed = processes.values([totals[k] for k in keys]).sum(0)
    same = {"grad_norm", "update/skipped"}
    return {k: totals[k] if k in same else float(value) for k, value in zip(keys, summed, strict=True)}


def slowest(processes: Processes, timings: dict[str, float]) -> dict[str, float]:
    """Per timing, the slowest process's: the step waits for it."""
    if processes.count == 1:
        return timings
    keys = list(timings)
    most = processes.values([timings[k] for k in keys]).max(0).values
    return {k: float(value) for k, value in zip(keys, most, strict=True)}


# -- replicas -----------------------------------------------------------------------------------


def param_checksum(model: torch.nn.Module) -> str:
    """SHA-256 of the trainable parameters' bytes, by name: equal digests, identical weights."""
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters(), key=lambda named: named[0]):
        if param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
