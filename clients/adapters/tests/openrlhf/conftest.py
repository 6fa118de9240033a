"""OpenRLHF 0.11.2's real experience and loss code on CPU, and a real scoring server.

Run in .venv-openrlhf (`make openrlhf-env`): OpenRLHF without flash-attn and vLLM (CUDA-only),
with DeepSpeed (its CPU install) and transformers==5.15.0, which the core cannot use.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "tests" / "integrations"))

from scoring_server import model_root, server_url, tiny_model_dir, tokenizer  # noqa: F401  (session fixtures)


@pytest.fixture(scope="session")
def openrlhf_modules() -> types.SimpleNamespace:
    """OpenRLHF's experience maker and policy loss, imported without the two package inits that need CUDA.

    `openrlhf/models/__init__.py` imports the actor, which imports flash-attn: the package is
    entered without its init, so `openrlhf.models.utils` and `.loss` load from their own files.
    `openrlhf/trainer/ray/__init__.py` imports vLLM, and `launcher` the actor: the experience maker
    names `RayActorGroup` from it only in type annotations, so an empty module stands in for it.
    Every module the advantage code runs (experience_maker, experience, length_penalty,
    models.utils, seqlen_balancing) is OpenRLHF's own.
    """
    import openrlhf

    root = Path(openrlhf.__file__).parent
    models = types.ModuleType("openrlhf.models")
    models.__path__ = [str(root / "models")]
    ray_package = types.ModuleType("openrlhf.trainer.ray")
    ray_package.__path__ = []
    launcher = types.ModuleType("openrlhf.trainer.ray.launcher")
    launcher.RayActorGroup = object
    sys.modules.update(
        {"openrlhf.models": models, "openrlhf.trainer.ray": ray_package, "openrlhf.trainer.ray.launcher": launcher}
    )
    return types.SimpleNamespace(
        maker=importlib.import_module("openrlhf.trainer.ppo_utils.experience_maker"),
        experience=importlib.import_module("openrlhf.trainer.ppo_utils.experience"),
        loss=importlib.import_module("openrlhf.models.loss"),
    )
