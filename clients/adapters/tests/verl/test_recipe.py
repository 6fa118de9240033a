"""examples/verl: the config composes on verl's own, sets only keys verl knows (or ccapo's), and with the
launch script's own overrides passes verl's validation; the entry point runs ccapo's task runner."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest
import verl
from ccapo_adapters.verl_runner import CounterfactualTaskRunner
from ccapo_adapters.verl_trainer import provider_from_config
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from ccapo import ScoringConfig

RECIPE = Path(__file__).resolve().parents[4] / "examples" / "verl"
OURS = {"hydra", "defaults", "counterfactual"}


def leaves(node, prefix: str = "") -> list[str]:
    if not OmegaConf.is_dict(node):
        return [prefix]
    return [leaf for key, value in node.items_ex(resolve=False) for leaf in leaves(value, f"{prefix}{key}.")]


def known(config, key: str) -> bool:
    """Whether verl's config has `key`, set or mandatory ("???", e.g. the rollout's engine name)."""
    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(config, parent) if parent else config
    return OmegaConf.is_dict(node) and name in node.keys()  # noqa: SIM118 (`in` skips mandatory "???" keys)


def recipe(*overrides: str):
    with initialize_config_dir(config_dir=str(RECIPE / "config"), version_base=None):
        settings = ["counterfactual.sync_dir=/tmp/s", "counterfactual.admin_key=k"]
        return compose("ccapo_grpo_gsm8k", overrides=[*settings, *overrides])


def script_overrides(**gpus: int) -> list[str]:
    """The overrides run_gsm8k_grpo.sh gives main_ccapo.py, for these GPU counts (its own --print-overrides)."""
    env = {**os.environ, **{name.upper(): str(count) for name, count in gpus.items()}}
    done = subprocess.run(
        ["bash", str(RECIPE / "run_gsm8k_grpo.sh"), "--print-overrides"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.splitlines()


def entry_point():
    spec = importlib.util.spec_from_file_location("main_ccapo", RECIPE / "main_ccapo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_recipe_sets_only_keys_of_verls_config():
    with initialize_config_dir(config_dir=str(Path(verl.__file__).parent / "trainer" / "config"), version_base=None):
        base = compose("ppo_trainer")
    keys = [key.rstrip(".") for key in leaves(OmegaConf.load(RECIPE / "config" / "ccapo_grpo_gsm8k.yaml"))]
    ours = [key for key in keys if any(key == own or key.startswith(f"{own}.") for own in OURS)]
    unknown = [key for key in keys if key not in ours and not known(base, key)]
    assert unknown == [] and "actor_rollout_ref.rollout.n" in keys


@pytest.mark.parametrize(
    "gpus",
    [{}, {"gpus_per_node": 4}, {"gpus_per_node": 8, "scorer_gpus": 2, "nnodes": 2}],
    ids=["defaults", "4-gpus", "2-nodes-2-scorer-gpus"],
)
def test_the_config_with_the_scripts_overrides_passes_verls_validation(gpus):
    overrides = script_overrides(**gpus)
    config = recipe(*overrides)
    expected = gpus.get("gpus_per_node", 8) - gpus.get("scorer_gpus", 1)
    assert config.trainer.n_gpus_per_node == expected and f"trainer.n_gpus_per_node={expected}" in overrides
    entry_point().checked(config)  # verl's validate_config, as main_ccapo.py runs it before Ray starts


def test_the_config_alone_passes_verls_validation():
    entry_point().checked(recipe())


def test_the_recipe_scores_through_the_ray_app_the_scorer_command_deploys():
    config = recipe()
    assert config.trainer.use_v1 and config.trainer.v1.trainer_mode == "ccapo_sync"
    assert config.counterfactual.provider == "ray" and config.counterfactual.ray_app == "ccapo"
    script = (RECIPE / "run_gsm8k_grpo.sh").read_text()
    assert "serve --ray --detach" in script and "CUDA_VISIBLE_DEVICES" not in script
    assert "worker_process_setup_hook" not in OmegaConf.to_yaml(config)  # the task runner registers ccapo


def provider_over_http(server_url, model_root, *overrides: str):
    config = recipe("counterfactual.provider=remote", *overrides)
    with open_dict(config):
        config.counterfactual.server_url = server_url
        config.counterfactual.admin_key = "admin"
        config.counterfactual.sync_dir = str(model_root / "recipe-sync")
    return provider_from_config(config.counterfactual)  # checks the server, the scoring config and sync access


def test_the_recipe_over_http_has_a_working_provider(server_url, model_root):
    assert provider_over_http(server_url, model_root).config.sync_every == 10


def test_the_authors_code_is_one_override_away(server_url, model_root):
    provider = provider_over_http(server_url, model_root, "+counterfactual.scoring.preset=aligntune")
    assert ScoringConfig.model_validate(provider.config.scoring_config()) == ScoringConfig(preset="aligntune")


def test_the_entry_point_runs_ccapos_task_runner(monkeypatch):
    module = entry_point()
    ran = []
    monkeypatch.setattr(module, "run_ppo", lambda config, task_runner_class: ran.append(task_runner_class))
    with pytest.raises(ValueError, match="ccapo_sync"):
        module.checked(recipe("trainer.v1.trainer_mode=sync"))
    module.main.__wrapped__(recipe())
    assert ran == [CounterfactualTaskRunner]


def test_the_ccapo_settings_are_read_from_the_launching_shell_not_the_task_runner(monkeypatch, tmp_path):
    """verl resolves the config again in its TaskRunner, a Ray actor with the environment of `ray start`:
    what the launching shell exported must already be in the config it sends there."""
    monkeypatch.setenv("CCAPO_ADMIN_KEY", "the-scorers-key")
    monkeypatch.setenv("CCAPO_SYNC_DIR", str(tmp_path / "sync"))
    overrides = script_overrides()
    with initialize_config_dir(config_dir=str(RECIPE / "config"), version_base=None):
        config = compose("ccapo_grpo_gsm8k", overrides=overrides)
    sent = entry_point().checked(config)
    monkeypatch.delenv("CCAPO_ADMIN_KEY")  # the task runner's process: none of the shell's exports
    monkeypatch.delenv("CCAPO_SYNC_DIR")
    OmegaConf.resolve(sent)  # what verl's TaskRunner.run does first
    assert sent.counterfactual.admin_key == "the-scorers-key" and sent.counterfactual.sync_dir == str(tmp_path / "sync")


def test_a_missing_admin_key_stops_the_launch_with_what_to_set(monkeypatch):
    monkeypatch.delenv("CCAPO_ADMIN_KEY", raising=False)
    with pytest.raises(ValueError, match="CCAPO_ADMIN_KEY"):
        entry_point().checked(recipe("counterfactual.admin_key=${oc.env:CCAPO_ADMIN_KEY,null}"))
    # no sync, no key needed
    entry_point().checked(recipe("counterfactual.admin_key=null", "counterfactual.sync_every=0"))


def test_separate_async_needs_rollout_gpus_of_its_own():
    with pytest.raises(ValueError, match="ROLLOUT_GPUS"):
        entry_point().checked(recipe("trainer.v1.trainer_mode=ccapo_separate_async"))
    overrides = script_overrides(gpus_per_node=8, rollout_gpus=2)
    assert "trainer.n_gpus_per_node=5" in overrides and "actor_rollout_ref.rollout.n_gpus_per_node=2" in overrides
    config = recipe(*overrides, "trainer.v1.trainer_mode=ccapo_separate_async")
    assert entry_point().checked(config).actor_rollout_ref.rollout.n_gpus_per_node == 2
