"""bench/gpu_check.py on the CPU: its dry run (the check's own code, tiny shapes, so it never rots before the
minutes a GPU is lent), its plan and estimate, its preflight, and the timing and kernel pieces it relies on.
Real subprocesses for the dry run: the script and its training step. The server section runs in
`make test-install` (tests/bench/test_gpu_bundle.py), where it costs no main-suite time."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.append(str(ROOT / "bench"))  # last: bench's engine.py or memory.py must shadow nothing

import gpu_bundle  # noqa: E402
import kernel_speed  # noqa: E402
from gpucheck.attention import AttentionFallback, backends, kernels_of, require_fused  # noqa: E402
from gpucheck.plan import BUDGET_S, DEFAULT_SECTIONS, SECTIONS, estimate, real_plan  # noqa: E402
from gpucheck.preflight import preflight, ready_or_exit  # noqa: E402

IN_SUITE = ("engine", "reference", "horizon", "train")


def test_the_dry_run_writes_every_section_it_is_asked_for(tmp_path: Path, default_model_dir: str) -> None:
    out = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--dry-run", "--only", ",".join(IN_SUITE), "--bundle", "none",
         "--tokenizer", default_model_dir, "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    report = (tmp_path / "gpu_check.md").read_text()
    assert out.returncode == 0, report + out.stderr[-3000:]
    assert "Failed:" not in report and "Scoring server" not in report
    assert re.search(r"Estimated time on one H100: \d+ s \(within the 300 s budget\)", report)
    assert "ok       every package imports" in out.stderr  # the preflight ran first
    for title in ("Engine against plain forwards", "Engine against the naive reference", "Horizon against exact"):
        assert f"## {title}" in report
    for tokens in (64, 160):  # every pass at every length, with the kernel it ran
        for name in ("two plain causal forwards", "engine, one row", "engine, 3 rows"):
            assert re.search(
                rf"\| {tokens} \| {name} \| [\d.]+ \| [\d,]+ \| [\d,]+ \| [\d.]+x \| flash \(CPU\) \|", report
            )
    assert re.search(r"\| engine \| [\d.]+ \| [\d,]+ \| [\d.]+ \| 6 \|", report)  # engine vs reference
    assert re.search(r"\| horizon W=8 \| [\d.]+ \| [\d.]+x \| [\d,]+ \(0\.\d+\) \| 4 \|", report)
    assert re.search(r"\| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+% \| \d+ \|", report)  # the training step


def test_the_default_run_is_estimated_within_one_short_slot() -> None:
    found = estimate(real_plan(), DEFAULT_SECTIONS)
    assert set(found) == {"setup", *DEFAULT_SECTIONS}
    assert all(seconds > 1 for seconds in found.values())
    assert sum(found.values()) < BUDGET_S == 300
    assert sum(estimate(real_plan(), SECTIONS).values()) > sum(found.values())  # "batch" costs its own time


def test_sections_are_chosen_by_name(tmp_path: Path) -> None:
    run = [sys.executable, "bench/gpu_check.py", "--estimate", "--only"]
    one = subprocess.run([*run, "engine,horizon"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert one.returncode == 0 and re.search(r"setup \d+ s, engine \d+ s, horizon \d+ s\.", one.stderr)
    bad = subprocess.run([*run, "engine,gpu"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown section(s) ['gpu']" in bad.stderr


def test_the_real_plan_is_a_valid_training_config() -> None:
    """The GPU-only settings (LoRA, bf16, gradient checkpointing) never run here: check they parse."""
    from ccapo_trainer.config import load_config
    from train_step import DEFAULTS

    plan = real_plan()
    config = load_config(None, [*DEFAULTS, "model=/models/qwen", *plan.grpo, "steps=1"])
    assert (config.num_generations, config.max_completion_length, config.lora.r) == (8, 768, 32)
    assert config.gradient_checkpointing and config.dtype == "bfloat16"
    assert plan.lengths == (1024, 4096, 8192) and plan.horizon_tokens == 4096 and plan.clients == (1, 8, 32)
    assert plan.shape["num_hidden_layers"] == 28 and plan.shape["hidden_size"] == 1536  # Qwen2.5-1.5B


def fake_bundle(tmp_path: Path, requirements: list[str]) -> Path:
    (tmp_path / gpu_bundle.REQUIREMENTS).write_text("# a comment\n" + "\n".join(requirements) + "\n")
    manifest = {"python": "3.11", "ours": [], "requirements": requirements, "left_out": {}, "files": {}}
    (tmp_path / gpu_bundle.MANIFEST).write_text(json.dumps(manifest))
    return tmp_path


def test_the_preflight_lists_what_is_missing_or_too_old(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = fake_bundle(tmp_path, ["rich>=13", "pydantic>=99", "no-such-package-ccapo>=1"])
    found = preflight("cpu", bundle, None, None, 0, 0)
    assert found.stale_packages
    assert [line.split(" (")[0] for line in found.missing] == ["pydantic>=99", "no-such-package-ccapo>=1"]
    assert "(installed: " in found.missing[0] and "(not installed)" in found.missing[1]
    assert any(line.startswith("ok       rich ") for line in found.lines)
    monkeypatch.setenv("CCAPO_GPU_CHECK_INSTALLED", "1")  # installed from the bundle already: stop, never loop
    with pytest.raises(SystemExit) as stopped:
        ready_or_exit("cpu", bundle, None, None, 0, 0)
    assert stopped.value.code == 2
    assert "not ready" in capsys.readouterr().err


def test_a_bundle_that_lacks_a_package_stops_the_check_with_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pip, with no index, finds nothing for the package: the check says so and stops (nothing is installed)."""
    monkeypatch.delenv("CCAPO_GPU_CHECK_INSTALLED", raising=False)
    bundle = fake_bundle(tmp_path, ["no-such-package-ccapo>=1"])
    with pytest.raises(SystemExit) as stopped:
        ready_or_exit("cpu", bundle, None, None, 0, 0)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert f"installing from {bundle} (no index)" in err and "lacks a package this machine needs" in err


def test_the_preflight_needs_cuda_for_the_real_run_and_a_built_bundle(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    found = preflight("cuda", None, None, None, 0, 0)
    assert any("torch.cuda.is_available() is False" in line for line in found.missing)
    empty = preflight("cpu", tmp_path, None, None, 0, 0)
    assert empty.missing == [f"bundle {tmp_path}: no manifest.json (`make gpu-bundle` builds one)"]


def test_the_bundle_requirements_follow_the_pyproject_files() -> None:
    wanted = [gpu_bundle.name_of(r) for r in gpu_bundle.requirements()]
    assert "torch" not in wanted and "reasoning-gym" not in wanted and "ccapo" not in wanted
    assert {"transformers", "fastapi", "peft", "math-verify", "httpx", "ccapo-client", "ccapo-adapters"} <= set(wanted)
    assert gpu_bundle.torch_floor() == re.search(r"torch>=([\d.]+)", (ROOT / "pyproject.toml").read_text()).group(1)


def test_timed_regions_drain_the_device_at_both_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA returns before its kernels finish: each timing must synchronize before it starts and after it ends."""
    import torch

    events: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append("sync"))
    runs = {"a": lambda: events.append("a"), "b": lambda: events.append("b")}
    kernel_speed.best_of(2, runs, "cuda")
    assert events == ["a", "b"] + ["sync", "a", "sync", "sync", "b", "sync"] * 2  # a warm-up each, then timed
    events.clear()
    kernel_speed.best_of(1, runs, "cpu")
    assert "sync" not in events


def test_the_attention_kernels_are_read_from_the_profiler() -> None:
    import torch
    import torch.nn.functional as F

    q = torch.randn(1, 2, 16, 8)
    assert kernels_of(lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True), "cpu") == ["flash (CPU)"]
    names = ["aten::mm", "aten::_scaled_dot_product_efficient_attention", "aten::_scaled_dot_product_attention_math"]
    assert backends(names) == ["efficient", "math"]
    assert backends(["Torch-Compiled Region: 0/0", "FlexAttentionAutogradOp"]) == ["compiled", "flex"]


def test_a_fallback_to_the_math_kernel_is_an_error_on_cuda_only() -> None:
    require_fused("the engine", ["flash", "efficient"], "cuda")
    require_fused("the engine", ["math"], "cpu")
    with pytest.raises(AttentionFallback, match=r"the engine at 4096 tokens ran SDPA's math kernel"):
        require_fused("the engine at 4096 tokens", ["efficient", "math"], "cuda")
    with pytest.raises(AttentionFallback, match="no attention kernel"):
        require_fused("the engine", [], "cuda")
