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


def test_the_real_plan_is_a_valid_training_config() -> None:
    """The GPU-only settings (LoRA, bf16, gradient checkpointing) never run here: check they parse."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from gpu_check import real_plan
        from train_step import DEFAULTS
    finally:
        sys.path.remove(str(ROOT / "bench"))
    from ccapo_trainer.config import load_config

    plan = real_plan()
    config = load_config(None, [*DEFAULTS, "model=/models/qwen", *plan.grpo, "steps=1"])
    assert (config.num_generations, config.max_completion_length, config.lora.r) == (8, 768, 32)
    assert config.gradient_checkpointing and config.dtype == "bfloat16"
    assert plan.probe == (256, 768, 10) and plan.clients == (1, 8, 32)
