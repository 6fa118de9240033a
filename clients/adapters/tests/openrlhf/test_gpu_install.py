"""What a GPU user installs for OpenRLHF (docs/integrations.md) resolves, with OpenRLHF's own Ray pin.

OpenRLHF 0.11.2 pins `ray[default]==2.55.0`; `ccapo-client[ray]` (the Serve handle of
`provider: ray`) must take that Ray, with its serve extra. One resolver run (`pip install
--dry-run --report`) against the package index. flash-attn and DeepSpeed publish source
distributions whose metadata build imports torch: they build here without isolation, against this
environment's CPU torch, with their CUDA builds off (no CUDA is needed to resolve). Cost: several
minutes of resolving and metadata downloads (marked slow).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from gpu_resolve import resolve
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[4]
CLIENT, ADAPTERS = ROOT / "clients" / "python", ROOT / "clients" / "adapters"
GPU_INSTALL = ["openrlhf[vllm]==0.11.2", f"{CLIENT}[ray]", str(ADAPTERS)]


@pytest.mark.slow
@pytest.mark.install  # a resolver run against the index: `make test-install`
def test_the_gpu_install_resolves_with_openrlhfs_own_ray(tmp_path):
    no_cuda_builds = {"FLASH_ATTENTION_SKIP_CUDA_BUILD": "TRUE", "DS_BUILD_OPS": "0"}
    resolved = resolve(GPU_INSTALL, "openrlhf", tmp_path, "--no-build-isolation", env=no_cuda_builds, timeout=1800)
    assert {"openrlhf", "vllm", "ccapo-client", "ccapo-adapters", "ray"} <= resolved.keys()
    pins = {r.name: r for r in map(Requirement, resolved["openrlhf"]["requires_dist"]) if r.marker is None}
    assert resolved["ray"]["version"] in pins["ray"].specifier  # OpenRLHF's pin holds: ccapo moved nothing
    assert resolved["transformers"]["version"] in pins["transformers"].specifier
