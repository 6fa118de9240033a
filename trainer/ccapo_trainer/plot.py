"""PNG figures of training runs: reward and accuracy per step (one line per run), weight histograms."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ccapo_adapters.names import WEIGHT_HISTOGRAM

from ccapo_trainer.metrics import HIST_BINS, HIST_MAX, read_metrics

CURVES = (
    ("reward/mean", "reward (mean over samples)", "reward.png"),
    ("accuracy", "training accuracy (sampled)", "accuracy.png"),
    ("eval/accuracy", "held-out greedy accuracy", "eval_accuracy.png"),
)


def plot_runs(run_dirs: Sequence[Path], output_dir: Path) -> list[Path]:
    """Write one PNG per curve found in the runs, and `weights.png`; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    runs = {_label(Path(d), run_dirs): read_metrics(Path(d)) for d in run_dirs}
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key, title, name in CURVES:
        series = {label: _series(records, key) for label, records in runs.items()}
        if not any(len(steps) for steps, _ in series.values()):
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for label, (steps, values) in series.items():
            if len(steps):
                ax.plot(steps, values, marker="o" if len(steps) < 30 else None, label=label)
        ax.set(xlabel="step", title=title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(output_dir / name, dpi=120)
        plt.close(fig)
        written.append(output_dir / name)

    histograms = {label: _histogram(records) for label, records in runs.items()}
    histograms = {label: h for label, h in histograms.items() if h is not None}
    if histograms:
        edges = np.linspace(0, HIST_MAX, HIST_BINS + 1)
        fig, ax = plt.subplots(figsize=(7, 4))
        for label, counts in histograms.items():
            ax.stairs(counts / max(counts.sum(), 1), edges, label=label)
        ax.set(xlabel="token weight", ylabel="share of completion tokens", title="token weights over all steps")
        ax.legend()
        fig.tight_layout()
        fig.savefig(output_dir / "weights.png", dpi=120)
        plt.close(fig)
        written.append(output_dir / "weights.png")
    if not written:
        raise ValueError("the runs have no step records to plot yet")
    return written


def _label(run: Path, runs: Sequence[Path]) -> str:
    names = [Path(r).name for r in runs]
    return run.name if names.count(run.name) == 1 else str(run)


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if key in r]
    return [s for s, _ in points], [v for _, v in points]


def _histogram(records: list[dict[str, Any]]) -> np.ndarray | None:
    # Runs logged before the metrics took the adapters' names call it "weights/hist".
    hists = [r.get(WEIGHT_HISTOGRAM, r.get("weights/hist")) for r in records]
    counts = [np.asarray(h, dtype=float) for h in hists if h is not None]
    return np.sum(counts, axis=0) if counts else None
