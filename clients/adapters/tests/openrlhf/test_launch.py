"""The OpenRLHF recipe as it starts: the launch script's own arguments through the entry point and
OpenRLHF's own argument parser and checks, and the worker setup hook that imports only the standard library.
OpenRLHF's parser and checks run as `openrlhf_cli.openrlhf_args` runs them (its `train` starts GPU actors).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from openrlhf_cli import openrlhf_args

REPO = Path(__file__).resolve().parents[4]
RECIPE = REPO / "examples" / "openrlhf"


def script_args(**env: str) -> list[str]:
    """What run_gsm8k_reinforce.sh gives train_ppo_ccapo.py (its --print-args), with settings in `env`."""
    done = subprocess.run(
        ["bash", str(RECIPE / "run_gsm8k_reinforce.sh"), "--print-args"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()


@pytest.fixture
def entry_point(monkeypatch):
    """examples/openrlhf/train_ppo_ccapo.py's `main`, with `ray.init` recorded (no cluster here) and
    OpenRLHF's `train_ppo_ray` run as far as `openrlhf_args` runs it."""
    monkeypatch.syspath_prepend(str(RECIPE))
    entry = importlib.import_module("train_ppo_ccapo")
    started = SimpleNamespace(runtime_env=None, args=None)
    monkeypatch.setattr(entry.ray, "init", lambda runtime_env: setattr(started, "runtime_env", runtime_env))

    def run_module(name: str, run_name: str) -> None:
        assert (name, run_name) == ("openrlhf.cli.train_ppo_ray", "__main__")
        started.args = openrlhf_args(sys.argv[1:])

    monkeypatch.setattr(entry.runpy, "run_module", run_module)

    def start(argv: list[str], **env: str) -> SimpleNamespace:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(sys, "argv", ["train_ppo_ccapo.py", *argv])
        monkeypatch.chdir(RECIPE)
        entry.main()
        return started

    return start


@pytest.mark.parametrize(("gpus_per_node", "scorer_gpus"), [(8, 1), (8, 2), (4, 1), (16, 1)])
def test_the_launch_script_starts_with_openrlhfs_own_checks_and_gpus_from_one_setting(
    entry_point, gpus_per_node, scorer_gpus
):
    settings = {"GPUS_PER_NODE": str(gpus_per_node), "SCORER_GPUS": str(scorer_gpus), "CCAPO_SYNC_DIR": "/sync"}
    started = entry_point(script_args(**settings), CCAPO_ADMIN_KEY="admin", CCAPO_SYNC_DIR="/sync")
    args = started.args
    vllm_gpus = args.vllm.num_engines * args.vllm.tensor_parallel_size
    trainer_gpus = args.actor.num_gpus_per_node + args.ref.num_gpus_per_node + vllm_gpus
    assert trainer_gpus + scorer_gpus == gpus_per_node  # every GPU has one owner, none picked by hand
    assert args.ckpt.output_dir == "/sync"  # where the actor saves the policy the scorer loads
    env = started.runtime_env
    assert env["worker_process_setup_hook"] == "ccapo_adapters.openrlhf_hook.install"
    ccapo = json.loads(env["env_vars"]["CCAPO_ADAPTER_SETTINGS"])
    assert ccapo["provider"] == "ray" and ccapo["admin_key"] == "admin" and ccapo["sync_dir"] == "/sync"


def test_the_worker_setup_hook_imports_only_the_standard_library():
    """Ray runs it before it sets the actor's CUDA_VISIBLE_DEVICES: torch or DeepSpeed imported there would
    see every GPU (once, `openrlhf_trainer.install` imported both)."""
    code = (
        "import sys\n"
        "from ccapo_adapters.openrlhf_hook import install\n"
        "install()\n"
        "print(sorted({'torch', 'deepspeed', 'openrlhf', 'ccapo_client', 'transformers'} & set(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stderr


def test_install_patches_openrlhfs_ppo_trainer_module_when_openrlhf_loads_it(openrlhf_modules, monkeypatch):
    """`install()` for real: OpenRLHF's own PPO trainer module is found with a loader that patches it once
    it has run. Its code cannot run here (vLLM); `patch` is applied to a module holding OpenRLHF's real
    experience maker, as the loader does after OpenRLHF's code has set it."""
    import openrlhf
    from ccapo_adapters import openrlhf_hook
    from ccapo_adapters.openrlhf_trainer import CounterfactualExperienceMaker, patch

    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.delitem(sys.modules, openrlhf_hook.PPO_TRAINER, raising=False)
    openrlhf_hook.install()
    openrlhf_hook.install()  # once per process, however often Ray calls it
    assert sum(isinstance(f, openrlhf_hook._PatchOnImport) for f in sys.meta_path) == 1
    spec = importlib.util.find_spec(openrlhf_hook.PPO_TRAINER)
    assert spec.origin == str(Path(openrlhf.__file__).parent / "trainer" / "ppo_trainer.py")
    assert isinstance(spec.loader, openrlhf_hook._PatchingLoader)
    module = SimpleNamespace(RemoteExperienceMaker=openrlhf_modules.maker.RemoteExperienceMaker)
    patch(module)
    assert module.RemoteExperienceMaker is CounterfactualExperienceMaker
    assert issubclass(CounterfactualExperienceMaker, openrlhf_modules.maker.RemoteExperienceMaker)
