"""bench/kernel_speed.py at short lengths on the default model: the script runs and reports every pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_kernel_benchmark_reports_each_pass_at_each_length(tmp_path: Path, default_model_dir: str) -> None:
    out = tmp_path / "kernels.md"
    run = subprocess.run(
        [sys.executable, "bench/kernel_speed.py", "--lengths", "32", "64", "--repeats", "1", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line.split(" | ") for line in out.read_text().splitlines()[2:]]
    passes = ["two plain causal forwards", "engine, row attention", "engine, dense mask"]
    assert [row[1] for row in rows] == passes * 2
    assert [row[0].strip("| ") for row in rows] == ["32"] * 3 + ["64"] * 3
    assert [row[-1].strip(" |") for row in rows if row[1] != "engine, dense mask"] == ["0"] * 4  # no mask built
