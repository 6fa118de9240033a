"""The GPU check as a lent GPU machine runs it: no network, its own torch, the rest from `make gpu-bundle`.

A new environment holding only torch runs `bench/gpu_check.py --dry-run --bundle DIR`: its preflight finds
the packages missing, installs them from the bundle with no index, restarts and runs every section. The
bundle for that is built for this machine's Python (3.11) the way `make gpu-bundle` builds the GPU
machine's (3.12), which must stay under the 64 MiB a lent machine carries.

Minutes of venv, downloads and the dry run: `make test-install` runs this file (CCAPO_FRESH_ENV_PYTHON,
the Python to make the environment with); the main suite skips it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = os.environ.get("CCAPO_FRESH_ENV_PYTHON")
pytestmark = pytest.mark.skipif(not PYTHON, reason="builds an environment and two bundles: `make test-install`")
TORCH = "torch==2.13.0"  # the CPU build, from this machine's disk (the Makefile's pin)


def bundle(dest: Path, *args: str, tokenizer: str) -> dict:
    run = subprocess.run(
        [sys.executable, "bench/gpu_bundle.py", "--dest", str(dest), "--tokenizer", tokenizer, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads((dest / "manifest.json").read_text())


def test_the_gpu_machines_bundle_fits_what_it_carries(tmp_path: Path, default_model_dir: str) -> None:
    manifest = bundle(tmp_path / "b312", tokenizer=default_model_dir)  # the defaults: Python 3.12, numpy left out
    size = sum(f.stat().st_size for f in (tmp_path / "b312").rglob("*") if f.is_file())
    assert size < 60 * 2**20, f"{size / 2**20:.1f} MiB: the tree and the bundle share 64 MiB"
    wheels = [name for name in manifest["files"] if name.endswith(".whl")]
    assert not [w for w in wheels if w.split("-")[0].lower() in ("torch", "triton", "numpy", "sympy")]
    assert not [w for w in wheels if w.startswith("nvidia")]
    binary = [w for w in wheels if not w.endswith("-none-any.whl")]
    assert binary and all(("-cp312-" in w or "-abi3-" in w) and "manylinux" in w for w in binary), binary
    names = {wheel.split("-")[0] for wheel in wheels}
    assert {"transformers", "tokenizers", "ccapo", "ccapo_client", "ccapo_adapters"} <= names
    files = {"tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json", "gsm_problems.jsonl"}
    assert files <= set(manifest["files"])


def test_the_dry_run_passes_in_a_new_environment_from_the_bundle_alone(tmp_path: Path, default_model_dir: str) -> None:
    bundle(tmp_path / "b311", "--python-version", "3.11", "--has", tokenizer=default_model_dir)  # numpy shipped
    venv = tmp_path / "venv"
    subprocess.run([PYTHON, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([venv / "bin/pip", "install", "--quiet", TORCH], check=True, timeout=900)
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    run = subprocess.run(
        [venv / "bin/python", "bench/gpu_check.py", "--dry-run", "--bundle", str(tmp_path / "b311"),
         "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    report = (tmp_path / "gpu_check.md").read_text() if (tmp_path / "gpu_check.md").is_file() else ""
    assert run.returncode == 0, report + run.stderr[-4000:]
    assert "MISSING  transformers<6,>=5.24 (not installed)" in run.stderr  # only torch was there
    assert f"installing from {tmp_path / 'b311'} (no index)" in run.stderr
    assert "ok       every package imports" in run.stderr
    assert "Failed:" not in report
    for title in ("Engine against plain forwards", "Engine against the naive reference", "Horizon against exact",
                  "Scoring server", "One training step"):  # fmt: skip
        assert f"## {title}" in report
    assert "| batched | 2 |" in report and "| unbatched | 2 |" in report
