"""The layer rules of `.importlinter`, checked by import-linter on every import (inside functions too)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_layer_contracts_hold():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_source_module_is_over_450_lines():
    """docs/contributing.md: a module that grows past this holds more than one job; split it."""
    packages = ["ccapo", "server/ccapo_server", "trainer/ccapo_trainer", "clients/python/ccapo_client"]
    packages.append("clients/adapters/ccapo_adapters")
    modules = [path for package in packages for path in (ROOT / package).rglob("*.py")]
    sizes = {path: len(path.read_text(encoding="utf-8").splitlines()) for path in modules}
    assert sizes, "no source modules found"
    over = {str(path.relative_to(ROOT)): lines for path, lines in sizes.items() if lines > 450}
    assert not over, f"modules over 450 lines: {over}"
