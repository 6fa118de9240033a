"""bench/gpu_check.py's dry run: the GPU check's own code, tiny shapes on CPU, so it never rots
before the minutes a GPU is lent. Real subprocesses: the script, its servers, its training steps."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = (
    "## Engine against reference: Qwen2.5-1.5B (tiny)",
    "## Engine against reference: Qwen2.5-3B (tiny)",
    "## Scoring server",
    "## One GRPO step at the paper's shapes",
)


def test_the_dry_run_writes_every_section_of_the_report(tmp_path: Path, default_model_dir: str) -> None:
    out = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--dry-run", "--out", str(tmp_path), "--tokenizer", default_model_dir],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = (tmp_path / "gpu_check.md").read_text()
    assert out.returncode == 0, report + out.stderr[-3000:]
    assert "Failed:" not in report
    for title in SECTIONS:
        assert title in report
    assert re.search(r"\| engine \| [\d.]+ \|", report)  # engine vs reference rows have numbers
    assert re.search(r"Largest max_batch_tokens without running out of memory: 512\.", report)
    for setting in ("batched", "unbatched"):
        for clients in (1, 8, 32):
            assert re.search(rf"\| {setting} \| {clients} \| [\d.]+ \|", report), (setting, clients)
    assert re.search(r"\| engine \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+% \|", report)
