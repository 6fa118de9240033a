"""Per-step metrics: one JSON line per step in `OUTPUT_DIR/metrics.jsonl`, optionally TensorBoard too, and
with `log_completions` one line per sampled completion in `OUTPUT_DIR/completions.jsonl`.

Among the weight metrics (named as in the adapters, `ccapo_adapters.names`), every sample of a step (all
processes') is either scored or counted by why it was not: `ccapo/weights/scored_traces` traces went to the
scorer; `ccapo/weights/skipped_duplicates` samples took an identical sample's result;
`ccapo/weights/skipped_zero_advantage` and `ccapo/weights/skipped_nonpositive` samples kept uniform weights
because the loss never reads theirs (advantage 0; advantage <= 0 under `weight_positive_only`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
COMPLETIONS_FILE = "completions.jsonl"
# Fixed bins so histograms from different steps and runs line up: [0, 6) in steps of 0.1.
HIST_BINS = 60
HIST_MAX = 6.0


def weight_histogram(weights: torch.Tensor, mask: torch.Tensor) -> list[int]:
    values = weights[mask.bool()].clamp(0, HIST_MAX - 1e-6)
    return torch.histc(values, bins=HIST_BINS, min=0, max=HIST_MAX).long().tolist()


class MetricsLog:
    """Appends step records; on resume, drops the records of steps after the checkpoint first."""

    def __init__(self, output_dir: Path, resume_step: int | None = None, tensorboard: bool = False):
        self.path = output_dir / METRICS_FILE
        self.completions_path = output_dir / COMPLETIONS_FILE
        output_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
            self.completions_path.unlink(missing_ok=True)
        else:
            for path in (self.path, self.completions_path):
                if path.is_file():
                    kept = [r for r in _read_jsonl(path) if r["step"] <= resume_step]
                    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self.writer = _tensorboard(output_dir) if tensorboard else None

    def log(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as out:
            out.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, int | float) and key != "step":
                    self.writer.add_scalar(key, value, record["step"])

    def log_completions(self, step: int, rows: list[dict[str, Any]]) -> None:
        with self.completions_path.open("a") as out:
            out.writelines(json.dumps({"step": step, **row}) + "\n" for row in rows)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {METRICS_FILE}: is it a training run's output_dir?")
    return _read_jsonl(path)


def read_completions(run_dir: Path) -> list[dict[str, Any]]:
    """A `log_completions` run's samples: step, process, problem, completion and reward of each."""
    path = Path(run_dir) / COMPLETIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {COMPLETIONS_FILE}: was it trained with log_completions?")
    return _read_jsonl(path)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _tensorboard(output_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.warning("tensorboard=true but tensorboard is not installed (pip install '.[tensorboard]' from a clone)")
        return None
    return SummaryWriter(str(output_dir / "tensorboard"))
