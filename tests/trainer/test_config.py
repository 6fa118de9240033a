"""Training configs: YAML with `include:`, dotted `key=value` overrides, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
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
    raw = apply_overrides({"scoring": {"segmenter": "calc"}}, ["a=3e-5", "b=1E5", "c=-2.5e-3", "d=true", "e=[1, 2]",
                                                                 "f=model-1e5", "scoring.weights.scheme=normalized"])
    assert raw == {"a": 3e-5, "b": 1e5, "c": -2.5e-3, "d": True, "e": [1, 2], "f": "model-1e5",
                   "scoring": {"segmenter": "calc", "weights": {"scheme": "normalized"}}}


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
