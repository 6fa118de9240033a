"""Test support: verl 0.9.1 on CPUs, through verl's own platform extension point. Not part of ccapo.

verl reaches its device through `verl.plugin.platform.get_platform()` (`verl.utils.device`
delegates every call to it); a platform is registered with `PlatformRegistry.register` and chosen
by `VERL_PLATFORM`, and `VERL_USE_EXTERNAL_MODULES` has `import verl` import a module like this one
in every process, Ray's workers included. With this module loaded (`verl_cpu_env()` gives the
variables) the unchanged verl code runs on CPUs:

- `PlatformCPU`: device "cpu" and backend "gloo", so `initialize_global_process_group_ray` builds
  "cpu:gloo" groups and FSDP2 shards over a CPU device mesh; `empty_cache`, the memory statistics
  and the streams are no-ops (a CPU has no cache to empty or stream to wait on); the Ray resource
  stays "GPU", so verl's resource pools, worker groups and placement groups reserve the logical
  GPUs of a cluster started with `ray start --num-gpus N` on a CPU machine.
- `initialize_global_process_group_ray` given "cpu:gloo" unless its caller names a backend: verl
  builds its default "cpu:gloo,<device>:<backend>" from the platform, which for a CPU names the
  CPU twice, and torch refuses that string.
- `VERL_ENGINE_DEVICE=cuda`: verl registers its FSDP engine (`workers/engine/fsdp`) for "cuda" and
  "npu" only, though nothing in it needs CUDA once the platform answers; the override picks it.

Nothing here changes verl's code: what runs is verl's controller, worker groups, engines and
checkpoint managers; what CUDA alone does (kernels, NCCL, CUDA IPC) does not run.
"""

from __future__ import annotations

import os
import types
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
import verl.utils.distributed
from verl.plugin.platform import PlatformBase, PlatformRegistry

NAME = "ccapo_cpu"


class _CPUDevice(types.ModuleType):
    """What verl calls on `torch.cuda` (`get_torch_device()`), for CPU tensors: no cache, no streams."""

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.cpu, name)

    @staticmethod
    def empty_cache() -> None:
        return None

    ipc_collect = empty_cache
    reset_peak_memory_stats = empty_cache

    @staticmethod
    def set_per_process_memory_fraction(fraction: float, device: Any = None) -> None:
        return None

    @staticmethod
    def memory_allocated(device: Any = None) -> int:
        return 0

    memory_reserved = max_memory_allocated = max_memory_reserved = memory_allocated

    @staticmethod
    def mem_get_info(device: Any = None) -> tuple[int, int]:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return total, total

    @staticmethod
    def get_device_name(device: Any = None) -> str:
        return "cpu"

    @staticmethod
    def set_device(device: Any) -> None:
        return None

    @staticmethod
    def current_device() -> str:
        return "cpu"

    @staticmethod
    def device_count() -> int:
        return 1

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def current_stream(device: Any = None) -> Any:
        return torch.cpu.current_stream()

    @staticmethod
    def stream(stream: Any = None) -> Any:
        return nullcontext()

    manual_seed = staticmethod(torch.manual_seed)
    manual_seed_all = staticmethod(torch.manual_seed)
    get_rng_state = staticmethod(torch.get_rng_state)
    set_rng_state = staticmethod(torch.set_rng_state)


DEVICE = _CPUDevice("ccapo_cpu_device")


@PlatformRegistry.register(platform=NAME)
class PlatformCPU(PlatformBase):
    """verl's platform interface answered for CPUs (see the module docstring)."""

    device_name = "cpu"
    vendor_name = "cpu"
    device_module = DEVICE

    def is_available(self) -> bool:
        return True

    def current_device(self) -> str:
        return "cpu"  # verl passes it on as a device (`.to(get_device_id())`); an index would name an accelerator

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"  # what Ray sets for the logical GPUs it hands a worker

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"  # logical GPUs: `ray start --num-gpus N` on a machine without any

    def ray_noset_envvars(self) -> list[str]:
        return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


_init_group = verl.utils.distributed.initialize_global_process_group_ray


def _init_cpu_group(timeout_second: int | None = None, backend: str | None = None) -> None:
    _init_group(timeout_second=timeout_second, backend=backend or "cpu:gloo")


# Before verl's workers import it by name (this module loads at the end of `import verl`).
verl.utils.distributed.initialize_global_process_group_ray = _init_cpu_group


def verl_cpu_env(*extra_paths: str | Path) -> dict[str, str]:
    """The variables that load this platform and the CPU rollout (`cpu_rollout`) in every verl process.

    `extra_paths` join this module's folder on PYTHONPATH, for the other modules the processes import.
    """
    paths = [str(Path(__file__).parent), *map(str, extra_paths), os.environ.get("PYTHONPATH", "")]
    modules = ["cpu_platform", "cpu_rollout", *filter(None, os.environ.get("VERL_USE_EXTERNAL_MODULES", "").split(","))]
    return {
        "VERL_USE_EXTERNAL_MODULES": ",".join(dict.fromkeys(modules)),
        "VERL_PLATFORM": NAME,
        "VERL_ENGINE_DEVICE": "cuda",
        "PYTHONPATH": os.pathsep.join(filter(None, paths)),
    }
