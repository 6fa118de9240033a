"""examples/verl: the GSM8K GRPO config composes on verl's own, and sets only keys verl knows (or ccapo's)."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import verl
from ccapo_adapters.verl_trainer import check_sync_contents, provider_from_config
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

RECIPE = Path(__file__).resolve().parents[4] / "examples" / "verl"
OURS = {"hydra", "defaults", "ccapo", "ray_kwargs.ray_init.runtime_env.worker_process_setup_hook"}


def leaves(node, prefix: str = "") -> list[str]:
    if not OmegaConf.is_dict(node):
        return [prefix]
    return [leaf for key, value in node.items_ex(resolve=False) for leaf in leaves(value, f"{prefix}{key}.")]


def known(config, key: str) -> bool:
    """Whether verl's config has `key`, set or mandatory ("???", e.g. the rollout's engine name)."""
    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(config, parent) if parent else config
    return OmegaConf.is_dict(node) and name in node.keys()  # noqa: SIM118 (`in` skips mandatory "???" keys)


def recipe():
    with initialize_config_dir(config_dir=str(RECIPE / "config"), version_base=None):
        return compose("ccapo_grpo_gsm8k", overrides=["ccapo.sync_dir=/tmp/ccapo-sync"])


def test_the_recipe_sets_only_keys_of_verls_config():
    with initialize_config_dir(config_dir=str(Path(verl.__file__).parent / "trainer" / "config"), version_base=None):
        base = compose("ppo_trainer")
    keys = [key.rstrip(".") for key in leaves(OmegaConf.load(RECIPE / "config" / "ccapo_grpo_gsm8k.yaml"))]
    ours = [key for key in keys if any(key == own or key.startswith(f"{own}.") for own in OURS)]
    unknown = [key for key in keys if key not in ours and not known(base, key)]
    assert unknown == [] and "actor_rollout_ref.rollout.n" in keys


def test_the_recipe_runs_ccapos_sync_trainer_with_a_working_provider(server_url, model_root):
    config = recipe()
    assert config.trainer.use_v1 and config.trainer.v1.trainer_mode == "ccapo_sync"
    module, _, function = config.ray_kwargs.ray_init.runtime_env.worker_process_setup_hook.rpartition(".")
    assert callable(getattr(importlib.import_module(module), function))
    with open_dict(config):
        config.ccapo.server_url = server_url
        config.ccapo.admin_key = "admin"
        config.ccapo.sync_dir = str(model_root / "recipe-sync")
    provider = provider_from_config(config.ccapo)  # checks the server, the scoring config and sync access
    assert provider.config.sync_every == 10
    check_sync_contents(config, provider)  # the recipe's actor saves the hf_model that sync loads


def test_the_entry_point_imports():
    spec = importlib.util.spec_from_file_location("main_ccapo", RECIPE / "main_ccapo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.main)
