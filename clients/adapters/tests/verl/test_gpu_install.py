"""What a GPU user installs for verl (docs/integrations.md) resolves, with verl's own torch and transformers.

`verl[vllm]==0.9.1` pins torch and transformers; `ccapo-client[ray]` and `ccapo-adapters` must
take whatever it pins. One resolver run (`pip install --dry-run --report`) against the package
index; no CUDA is needed to resolve CUDA wheels' metadata.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from gpu_resolve import resolve
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[4]
CLIENT, ADAPTERS = ROOT / "clients" / "python", ROOT / "clients" / "adapters"
GPU_INSTALL = ["verl[vllm]==0.9.1", f"{CLIENT}[ray]", str(ADAPTERS)]
FRAMEWORK_PINNED = {"torch", "transformers"}


def requirements(project: Path) -> list[Requirement]:
    table = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    extras = [dep for deps in table.get("optional-dependencies", {}).values() for dep in deps]
    return [Requirement(dep) for dep in [*table["dependencies"], *extras]]


def test_ccapos_trainer_side_packages_leave_torch_and_transformers_to_the_framework():
    for project in (CLIENT, ADAPTERS):
        for requirement in requirements(project):
            if requirement.name in FRAMEWORK_PINNED:
                operators = {spec.operator for spec in requirement.specifier}
                assert operators <= {">="}, f"{project.name} caps {requirement}: verl's pin must win"


@pytest.mark.install  # a resolver run against the index: `make test-install`
def test_the_gpu_install_resolves_with_verls_own_pins(tmp_path):
    resolved = resolve(GPU_INSTALL, "verl", tmp_path)
    assert {"verl", "vllm", "ccapo-client", "ccapo-adapters", "ray"} <= resolved.keys()
    # verl's vllm extra pins exact versions; the resolution keeps them (our packages moved nothing).
    for requirement in map(Requirement, resolved["verl"]["requires_dist"]):
        applies = requirement.marker is None or requirement.marker.evaluate({"extra": "vllm"})
        if requirement.name in FRAMEWORK_PINNED and applies:
            assert resolved[requirement.name]["version"] in requirement.specifier, requirement
