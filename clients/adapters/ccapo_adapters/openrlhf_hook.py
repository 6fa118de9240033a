"""Ray's `worker_process_setup_hook` for OpenRLHF: `install()`, standard library only.

Ray runs the hook as each worker process starts, before it sets `CUDA_VISIBLE_DEVICES` for the
actor that process will host. Importing torch or DeepSpeed there would initialize CUDA with every
GPU visible (DeepSpeed counts devices at import), and each actor would then run on GPU 0. So the
hook imports nothing of OpenRLHF's stack: it registers an import hook, and the experience-maker
patch (`ccapo_adapters.openrlhf_trainer.patch`) runs when OpenRLHF itself imports
`openrlhf.trainer.ppo_trainer`, the module whose PPO trainer builds the experience maker, by which
time Ray has set the actor's devices.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

PPO_TRAINER = "openrlhf.trainer.ppo_trainer"


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds OpenRLHF's PPO trainer module as the other finders do, with a loader that patches it."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != PPO_TRAINER:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        from ccapo_adapters.openrlhf_trainer import patch  # OpenRLHF is loaded by now: so may ccapo's side be

        patch(module)


def install() -> None:
    """Have OpenRLHF's PPO trainers build ccapo's weighting experience maker, once OpenRLHF loads them."""
    if PPO_TRAINER in sys.modules:  # already imported in this process: patch it now
        from ccapo_adapters.openrlhf_trainer import patch

        patch(sys.modules[PPO_TRAINER])
        return
    if not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())
