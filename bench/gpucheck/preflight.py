"""The GPU check's preflight: in seconds, everything the run needs, or a list of what is missing.

Checked, in order: the Python; torch and (for the real run) a CUDA device with bf16 and free memory; every
package the check imports, at the version the pyproject files ask for (from the bundle's
requirements.txt where there is one); then, importing them, the tokenizer's files and the GSM problems;
the free disk the saved models take. Where packages are missing or too old and a bundle
(`make gpu-bundle`) is at hand, they are installed from it with no index, and the check starts over.
Only the standard library is imported before the packages are known to be there.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import gpu_bundle

INSTALLED_FLAG = "CCAPO_GPU_CHECK_INSTALLED"  # set on the restart after an install: never install twice
OURS_MODULES = ("ccapo", "ccapo_server", "ccapo_trainer", "ccapo_client", "ccapo_adapters")


@dataclass
class Findings:
    """What the preflight saw: a line per check, and what is missing (empty: ready)."""

    lines: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    stale_packages: bool = False  # missing or too-old packages: what a bundle can fix

    def ok(self, line: str) -> None:
        self.lines.append(f"ok       {line}")

    def fail(self, line: str, packages: bool = False) -> None:
        self.lines.append(f"MISSING  {line}")
        self.missing.append(line)
        self.stale_packages |= packages

    def report(self) -> str:
        return "\n".join(["preflight:", *(f"  {line}" for line in self.lines)])


def requirements(bundle: Path | None) -> list[str]:
    """The bundle's requirements, else the pyproject files' (the same list, `gpu_bundle.requirements`)."""
    if bundle is not None and (bundle / gpu_bundle.REQUIREMENTS).is_file():
        lines = (bundle / gpu_bundle.REQUIREMENTS).read_text().splitlines()
        return [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return gpu_bundle.requirements()


def check_packages(findings: Findings, bundle: Path | None) -> None:
    """Each requirement installed at a version it accepts (metadata only: nothing is imported)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pip vendors it; a bare environment may have nothing else
        from pip._vendor.packaging.requirements import Requirement
    for line in requirements(bundle):
        requirement = Requirement(line)
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            findings.fail(f"{requirement} (not installed)", packages=True)
            continue
        if requirement.specifier.contains(version, prereleases=True):
            findings.ok(f"{requirement.name} {version}")
        else:
            findings.fail(f"{requirement} (installed: {version})", packages=True)


def check_torch(findings: Findings, device: str, memory_gib: float) -> None:
    try:
        import torch
    except ImportError as error:
        findings.fail(f"torch ({error}): the check runs on the machine's own torch")
        return
    findings.ok(f"torch {torch.__version__} (ccapo asks for >={gpu_bundle.torch_floor()}; this one is used)")
    if device != "cuda":
        return
    if not torch.cuda.is_available():
        findings.fail("a CUDA device (torch.cuda.is_available() is False): run with --dry-run to check on CPU")
        return
    free, total = torch.cuda.mem_get_info()
    line = f"{torch.cuda.get_device_name()}, CUDA {torch.version.cuda}, {free / 2**30:.0f}/{total / 2**30:.0f} GiB free"
    if not torch.cuda.is_bf16_supported():
        findings.fail(f"bf16 on {line}")
    elif free < memory_gib * 2**30:
        findings.fail(f"{memory_gib:.0f} GiB of free GPU memory on {line}")
    else:
        findings.ok(line)


def check_imports(findings: Findings, bundle: Path | None) -> None:
    """Every required package and ours import (the versions were right; this finds broken installs)."""
    names = [gpu_bundle.name_of(line).replace("-", "_") for line in requirements(bundle)]
    for module in dict.fromkeys([*names, *OURS_MODULES]):
        try:
            importlib.import_module(module)
        except Exception as error:  # any failure to import is what the preflight is for
            findings.fail(f"import {module}: {type(error).__name__}: {error}", packages=True)
    if not findings.missing:
        findings.ok("every package imports")


def check_files(findings: Findings, tokenizer: str | None, problems: Path | None, disk_gib: float) -> None:
    if tokenizer is not None:
        try:
            from transformers import AutoTokenizer

            findings.ok(f"tokenizer {tokenizer} ({len(AutoTokenizer.from_pretrained(tokenizer)):,} tokens)")
        except Exception as error:  # a missing file or folder, a corrupt one
            findings.fail(f"tokenizer {tokenizer}: {type(error).__name__}: {error}")
    else:
        findings.ok("tokenizer: the default model's, fetched and converted on first use (needs the network)")
    if problems is not None:
        count = sum(1 for line in problems.read_text().splitlines() if line.strip())
        findings.ok(f"GSM problems: {problems} ({count})")
    elif importlib.util.find_spec("reasoning_gym") is None:
        findings.fail(f"GSM problems: no {gpu_bundle.PROBLEMS} in a bundle and no reasoning-gym to generate them")
    else:
        findings.ok("GSM problems: generated by reasoning-gym")
    free = shutil.disk_usage(tempfile.gettempdir()).free
    if free < disk_gib * 2**30:
        findings.fail(f"{disk_gib:.0f} GiB free in {tempfile.gettempdir()} for the saved models ({free / 2**30:.1f})")


def preflight(
    device: str, bundle: Path | None, tokenizer: str | None, problems: Path | None, memory_gib: float, disk_gib: float
) -> Findings:
    findings = Findings()
    findings.ok(f"Python {sys.version.split()[0]} ({sys.executable})")
    if bundle is not None and not (bundle / gpu_bundle.MANIFEST).is_file():
        findings.fail(f"bundle {bundle}: no {gpu_bundle.MANIFEST} (`make gpu-bundle` builds one)")
        return findings
    if bundle is not None:
        manifest = json.loads((bundle / gpu_bundle.MANIFEST).read_text())
        built = f"Python {manifest['python']}, {len(manifest['files'])} files"
        findings.ok(f"bundle {bundle} ({built}; left out: {', '.join(manifest['left_out'])})")
    check_packages(findings, bundle)
    check_torch(findings, device, memory_gib)
    if not findings.missing:
        check_imports(findings, bundle)
    if not findings.missing:
        check_files(findings, tokenizer, problems, disk_gib)
    return findings


def install(bundle: Path) -> None:
    """The requirements from the bundle's wheels, no index, then ours with no dependencies (the core asks for a
    newer torch than the machine may have; the check runs on the machine's). Raises CalledProcessError."""
    # Only the bundle: no configured index, find-links or constraints of this machine take part.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_BREAK_SYSTEM_PACKAGES="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    pip = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(bundle), "--quiet"]
    subprocess.run([*pip, "-r", str(bundle / gpu_bundle.REQUIREMENTS)], check=True, env=env)
    manifest = json.loads((bundle / gpu_bundle.MANIFEST).read_text())
    subprocess.run([*pip, "--no-deps", *(str(bundle / wheel) for wheel in manifest["ours"])], check=True, env=env)


def ready_or_exit(
    device: str, bundle: Path | None, tokenizer: str | None, problems: Path | None, memory_gib: float, disk_gib: float
) -> None:
    """Return when everything is there; install from the bundle and restart this process where packages are
    missing and a bundle is at hand; else print what is missing and exit with status 2."""
    findings = preflight(device, bundle, tokenizer, problems, memory_gib, disk_gib)
    print(findings.report(), file=sys.stderr, flush=True)
    if not findings.missing:
        return
    if findings.stale_packages and bundle is not None and not os.environ.get(INSTALLED_FLAG):
        print(f"installing from {bundle} (no index) ...", file=sys.stderr, flush=True)
        try:
            install(bundle)
        except subprocess.CalledProcessError:
            print(
                f"gpu_check: pip could not install from {bundle} alone (its message is above): either the bundle "
                "lacks a package this machine needs (rebuild it with `bench/gpu_bundle.py --has` naming only what "
                "the machine has), or this Python's packages are not writable (run it as their owner)",
                file=sys.stderr,
            )
            sys.exit(2)
        os.environ[INSTALLED_FLAG] = "1"
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    hint = "" if bundle is not None else " (no bundle: `make gpu-bundle` builds one, carry gpu-bundle/)"
    print(f"gpu_check: not ready{hint}:\n" + "\n".join(f"  - {line}" for line in findings.missing), file=sys.stderr)
    sys.exit(2)
