"""bench/long.py's dry run and bench/kernel_speed.py at short lengths: the long-reasoning benchmarks'
own code, so it never rots between the runs that take the default model minutes to hours."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def table_rows(script: str, args: list[str], out: Path) -> list[list[str]]:
    """Run a bench script in a subprocess; the rows of the markdown table it wrote to `out`."""
    run = subprocess.run(
        [sys.executable, script, *args, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in out.read_text().splitlines()[2:]]


def test_the_dry_run_compares_every_estimator_setting_at_every_length(tmp_path: Path, default_model_dir: str) -> None:
    png = tmp_path / "long.png"
    args = ["--dry-run", "--horizon-tails", "0", "16", "--verify", "2", "--plot", str(png)]
    rows = table_rows("bench/long.py", args, tmp_path / "long.md")
    windows = ["W=32", "W=128"]
    knobs = [*windows, *(f"{w}, T=16" for w in windows), *(f"{w}, m=2" for w in windows)]
    settings = ["exact", *(f"horizon {k}" for k in knobs), *(f"horizon {w}, T=16, m=2" for w in windows)]
    assert [row[1] for row in rows] == [*settings, "refine budget=0.5", "gradient"] * 2
    assert len({row[0] for row in rows}) == 2  # two lengths
    for row in rows:
        if row[1] != "exact":
            weight_pearson, drop_pearson = float(row[6]), float(row[8])
            assert -1.0 <= weight_pearson <= 1.0 and -1.0 <= drop_pearson <= 1.0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_the_kernel_benchmark_reports_each_pass_at_each_length(tmp_path: Path, tiny_model_dir: str) -> None:
    args = ["--lengths", "32", "64", "--repeats", "1", "--model", tiny_model_dir]  # the script's code, not the model
    rows = table_rows("bench/kernel_speed.py", args, tmp_path / "kernels.md")
    passes = ["two plain causal forwards", "engine, row attention", "engine, dense mask"]
    assert [row[1] for row in rows] == passes * 2
    assert [row[0] for row in rows] == ["32"] * 3 + ["64"] * 3
    assert [row[-1] for row in rows if row[1] != "engine, dense mask"] == ["0"] * 4  # row attention builds no mask
    assert all(int(row[-1].replace(",", "")) > 0 for row in rows if row[1] == "engine, dense mask")
