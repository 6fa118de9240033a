"""Which attention kernels a piece of work actually ran, read from the torch profiler.

SDPA picks its backend per call, silently: flash, memory-efficient or cuDNN attention where the inputs
allow, else its math kernel, which builds the full queries x keys matrix in eager ops. A fused path
that lands on math would look correct and be slow, so on CUDA a math fallback is an error.
FlexAttention shows as its own operator when it runs eagerly; compiled (as it must be to be fast), it is
a compiled region whose kernels the profiler does not name after it: reported as "compiled".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.profiler import ProfilerActivity, profile

# Profiler operator names -> SDPA backend (CPU and CUDA builds name their kernels differently).
BACKENDS = {
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)",
    "aten::_flash_attention_forward": "flash",
    "aten::_scaled_dot_product_efficient_attention": "efficient",
    "aten::_efficient_attention_forward": "efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_fused_attention_overrideable": "fused (device)",
    "aten::_scaled_dot_product_attention_math": "math",
    "aten::_scaled_dot_product_attention_math_for_mps": "math",
}
FLEX_MARKERS = ("flex_attention", "flexattention")
COMPILED = "Torch-Compiled Region"


class AttentionFallback(RuntimeError):
    """Attention on CUDA fell back to SDPA's math kernel: the inputs ruled out every fused kernel."""


def backends(names: Iterable[str]) -> list[str]:
    """The attention kernels among profiler event names, in a stable order."""
    found = set()
    for name in names:
        if name in BACKENDS:
            found.add(BACKENDS[name])
        elif any(marker in name.lower().replace(" ", "") for marker in FLEX_MARKERS):
            found.add("flex")
        elif name.startswith(COMPILED):
            found.add("compiled")
    return sorted(found)


def kernels_of(work: Callable[[], object], device: str) -> list[str]:
    """The attention kernels one run of `work` used (run once, profiled, synchronized)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as profiler:
        work()
        if device == "cuda":
            torch.cuda.synchronize()
    return backends(event.name for event in profiler.events())


def require_fused(what: str, kernels: list[str], device: str) -> None:
    """On CUDA, math among `kernels` (or none at all) is an error that says which work fell back."""
    if device != "cuda":
        return
    if "math" in kernels:
        raise AttentionFallback(
            f"{what} ran SDPA's math kernel on CUDA (kernels seen: {', '.join(kernels)}): an input ruled out "
            "flash, memory-efficient and cuDNN attention (a dense mask, a dtype, a head size, a layout)"
        )
    if not kernels:
        raise AttentionFallback(f"{what} ran no attention kernel the profiler names: read its trace")
