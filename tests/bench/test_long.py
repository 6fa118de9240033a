"""bench/long.py's dry run: the long-trace comparison's own code on a tiny random model, so it never
rots between the runs that take the default model minutes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_dry_run_compares_every_estimator_at_every_length(tmp_path: Path, default_model_dir: str) -> None:
    out = tmp_path / "long.md"
    run = subprocess.run(
        [sys.executable, "bench/long.py", "--dry-run", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line.split(" | ") for line in out.read_text().splitlines()[2:]]
    assert [(row[1], row[2]) for row in rows] == [("delete", e) for e in ("exact", "gradient", "refine")] * 2
    assert len({row[0] for row in rows}) == 2  # two lengths
    for row in rows:
        if row[2] != "exact":
            assert float(row[6]) <= 1.0 and 0.0 <= float(row[7]) <= 1.0  # Spearman, top-3 overlap
