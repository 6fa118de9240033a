"""What a GPU user installs for OpenRLHF (docs/integrations.md) resolves, with OpenRLHF's own Ray pin.

OpenRLHF 0.11.2 pins `ray[default]==2.55.0`; `ccapo-client[ray]` (the Serve handle of
`provider: ray`) must take that Ray, with its serve extra. One resolver run (`pip install
--dry-run --report`) against the package index. flash-attn and DeepSpeed publish source
distributions whose metadata build imports torch: they build here without isolation, against this
environment's CPU torch, with their CUDA builds off (no CUDA is needed to resolve). Cost: several
minutes of resolving and metadata downloads (marked slow).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[4]
CLIENT, ADAPTERS = ROOT / "clients" / "python", ROOT / "clients" / "adapters"
GPU_INSTALL = ["openrlhf[vllm]==0.11.2", f"{CLIENT}[ray]", str(ADAPTERS)]


def index_url() -> str:
    return os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")


@pytest.mark.slow
@pytest.mark.install  # a resolver run against the index: `make test-install`
def test_the_gpu_install_resolves_with_openrlhfs_own_ray(tmp_path):
    try:
        httpx.get(f"{index_url()}/openrlhf/", timeout=20, follow_redirects=True).raise_for_status()
    except httpx.HTTPError as err:
        pytest.skip(f"the package index {index_url()} is unreachable from here ({err}): nothing to resolve against")
    report = tmp_path / "report.json"
    resolve = ["install", "--dry-run", "--ignore-installed", "--no-build-isolation", "--quiet", "--report", str(report)]
    done = subprocess.run(
        [sys.executable, "-m", "pip", *resolve, *GPU_INSTALL],
        env={**os.environ, "FLASH_ATTENTION_SKIP_CUDA_BUILD": "TRUE", "DS_BUILD_OPS": "0"},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    installed = json.loads(report.read_text())["install"]
    resolved = {item["metadata"]["name"].lower(): item["metadata"] for item in installed}
    assert {"openrlhf", "vllm", "ccapo-client", "ccapo-adapters", "ray"} <= resolved.keys()
    pins = {r.name: r for r in map(Requirement, resolved["openrlhf"]["requires_dist"]) if r.marker is None}
    assert resolved["ray"]["version"] in pins["ray"].specifier  # OpenRLHF's pin holds: ccapo moved nothing
    assert resolved["transformers"]["version"] in pins["transformers"].specifier
