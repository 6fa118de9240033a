"""Training configs: YAML with `include:`, dotted `key=value` overrides, and errors that name the setting."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml
from ccapo_adapters import CounterfactualConfig
from ccapo_trainer.config import ConfigError, TrainConfig, apply_overrides, load_config

CONFIGS = Path(__file__).parents[2] / "configs"


def test_an_arm_config_includes_the_paper_config_and_overrides_apply_on_top():
    config = load_config(CONFIGS / "paper_inverted.yaml", ["learning_rate=3e-5", "scoring.intervention=pad"])
    assert config.weighting == "inverted" and config.output_dir == "runs/paper-inverted"
    paper = load_config(CONFIGS / "paper.yaml")
    assert config.num_generations == paper.num_generations and config.lora == paper.lora
    assert config.learning_rate == 3e-5 and config.scoring.intervention == "pad"
    assert config.scoring.segmenter == paper.scoring.segmenter  # a dotted override keeps the section's other keys


def test_override_values_are_parsed_as_yaml_and_exponent_floats_as_numbers():
    raw = apply_overrides(
        {"scoring": {"segmenter": "calc"}},
        ["a=3e-5", "b=1E5", "c=-2.5e-3", "d=true", "e=[1, 2]", "f=model-1e5", "scoring.weights.scheme=normalized"],
    )
    assert raw == {
        "a": 3e-5,
        "b": 1e5,
        "c": -2.5e-3,
        "d": True,
        "e": [1, 2],
        "f": "model-1e5",
        "scoring": {"segmenter": "calc", "weights": {"scheme": "normalized"}},
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["learning_rate"], "is not key=value"),
        (["stepz=1"], "stepz"),
        (["learning_rate=-1"], "learning_rate"),
        (["steps=10", "steps.x=1"], "steps is not a section"),
    ],
)
def test_mistakes_name_what_to_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_config_files_that_cannot_load(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "loop.yaml").write_text("include: loop.yaml\nsteps: 3\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "list.yaml").write_text("- steps\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_training_weights_are_mean_one_unless_a_config_asks_for_the_papers():
    assert TrainConfig().scoring.weights.scheme == "normalized"
    demo = load_config(CONFIGS / "cpu_demo.yaml", ["scoring.weights.boost=2"])
    assert (demo.scoring.weights.scheme, demo.scoring.weights.boost) == ("normalized", 2.0)
    for arm in ("counterfactual", "uniform", "inverted", "random"):
        assert load_config(CONFIGS / f"paper_{arm}.yaml", []).scoring.weights.scheme == "paper"
    assert load_config(CONFIGS / "cpu_demo.yaml", ["scoring.weights.scheme=paper"]).scoring.weights.scheme == "paper"


# -- the counterfactual section ----------------------------------------------------------------


def test_the_config_files_use_the_section_and_load_without_deprecated_keys():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in sorted(CONFIGS.glob("*.yaml")):
            config = load_config(path)
            assert config.counterfactual == CounterfactualConfig.model_validate(config.counterfactual.model_dump())
    inverted = load_config(CONFIGS / "paper_inverted.yaml").counterfactual
    assert (inverted.weighting, inverted.scheme, inverted.weight_scheme) == ("inverted", "paper", "inverted")
    assert inverted.scoring["intervention"] == "pad" and inverted.scoring["weights"]["boost"] == 4.0


def test_flat_names_load_into_the_section_with_a_warning(tmp_path):
    old = {
        "weighting": "inverted",
        "provider": "remote",
        "server_url": "http://a:1,http://b:2",
        "server_api_key": "k",
        "server_admin_key": "admin",
        "sync_every": 2,
        "sync_dir": "/d",
        "scoring": {"segmenter": "sentence", "weights": {"scheme": "paper", "boost": 2.0}},
    }
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    with pytest.warns(FutureWarning, match="'server_admin_key' is deprecated: write 'counterfactual.admin_key'"):
        loaded = load_config(tmp_path / "old.yaml")
    assert loaded.counterfactual == CounterfactualConfig(
        weighting="inverted",
        provider="remote",
        server_url=["http://a:1", "http://b:2"],
        api_key="k",
        admin_key="admin",
        sync_every=2,
        sync_dir="/d",
        scheme="paper",
        scoring={"segmenter": "sentence", "weights": {"boost": 2.0}},
    )
    with pytest.warns(FutureWarning):
        assert TrainConfig(**old).counterfactual == loaded.counterfactual  # Python arguments too
    with pytest.deprecated_call(match=r"TrainConfig.server_admin_key is deprecated: read config.counterfactual"):
        assert loaded.server_admin_key == "admin"
    with pytest.deprecated_call():
        assert (loaded.server_url, loaded.sync_every, loaded.server_api_key) == ("http://a:1,http://b:2", 2, "k")


def test_an_old_name_overrides_the_files_section_and_old_files_merge_with_new_ones(tmp_path):
    with pytest.warns(FutureWarning):
        config = load_config(CONFIGS / "paper_counterfactual.yaml", ["weighting=uniform", "scoring.max_spans=3"])
    assert config.counterfactual.weighting == "uniform" and config.counterfactual.scoring["max_spans"] == 3
    with pytest.warns(FutureWarning):
        normalized = load_config(CONFIGS / "paper_counterfactual.yaml", ["scoring.weights.scheme=normalized"])
    assert normalized.counterfactual.weight_scheme == "normalized"  # the file says paper; the override wins
    (tmp_path / "base.yaml").write_text("counterfactual: {weighting: counterfactual, scoring: {max_spans: 4}}\n")
    (tmp_path / "arm.yaml").write_text("include: base.yaml\nweighting: random\n")  # an arm file in the old names
    with pytest.warns(FutureWarning):
        arm = load_config(tmp_path / "arm.yaml").counterfactual
    assert (arm.weighting, arm.scoring) == ("random", {"max_spans": 4})
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match=r"weighting and counterfactual\.weighting"):
        TrainConfig(weighting="random", counterfactual={"weighting": "inverted"})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["counterfactual.scoring.max_spanz=3"], "counterfactual.scoring.max_spanz: Extra inputs"),
        (["counterfactual.scheme=normalised"], "counterfactual.scheme: Input should be"),
        (["counterfactual.weighting=inverted", "counterfactual.scheme=normalized"], "contradicts scheme"),
        (["counterfactual.provider=remote"], "needs server_url"),
        (["counterfactual.provider=ray"], "ccapo train scores in-process or on a scoring server"),
        (["counterfactual.sync_every=2"], "in-process scoring is the policy itself"),
    ],
)
def test_section_mistakes_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_a_remote_scorer_follows_the_policy_by_default():
    remote = ["counterfactual.provider=remote", "counterfactual.server_url=http://s:8000", "output_dir=runs/x"]
    section = load_config(None, remote).counterfactual
    assert (section.sync_every, section.sync_dir) == (1, "runs/x/sync")
    assert load_config(None, [*remote, "counterfactual.sync_every=0"]).counterfactual.sync_every == 0
    assert load_config(None, [*remote, "counterfactual.sync_dir=/shared"]).counterfactual.sync_dir == "/shared"
    uniform = load_config(None, ["counterfactual.provider=remote", "counterfactual.weighting=uniform"])
    assert uniform.counterfactual.sync_dir is None  # scores nothing: no server and no sync


def test_a_saved_config_loads_back_the_same(tmp_path):
    config = load_config(CONFIGS / "compose_remote.yaml", ["counterfactual.scheme=paper"])
    (tmp_path / "saved.yaml").write_text(config.to_yaml())
    assert load_config(tmp_path / "saved.yaml") == config
    with pytest.deprecated_call():
        from ccapo_trainer.config import TRAIN_SCHEME
    assert TRAIN_SCHEME == "normalized"


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("constant", [0.0, 0.5, 1.0, 1.0, 1.0]),  # transformers' own "constant" would skip the warm-up
        ("linear", [0.0, 0.5, 1.0, 0.5, 0.0]),
    ],
)
def test_the_learning_rate_warms_up_under_every_schedule(schedule, expected):
    import torch
    from ccapo_trainer.components import lr_schedule

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = lr_schedule(optimizer, TrainConfig(steps=4, warmup_steps=2, lr_scheduler=schedule))
    rates = []
    for _ in range(5):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx(expected)
