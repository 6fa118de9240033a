"""A training run's configuration: one validated model with TRL's names, read from YAML plus overrides.

`load_config("configs/x.yaml", ["lr=1e-5", "counterfactual.scoring.intervention=pad"])` reads the
file (which may `include:` a base file, relative to itself), applies `key=value` overrides (values
parsed as YAML, dotted keys reach into sections such as `counterfactual` and `lora`) and validates
the result, so a typo fails at once with the key's name instead of hours into a run.

The weighting settings are one section, `counterfactual`: the `CounterfactualConfig` every RL
adapter takes (`ccapo_adapters.config`), whose scoring config is checked here against
`ccapo.ScoringConfig`. The flat names they had before (`weighting`, `provider`, `scoring`,
`server_url`, `server_api_key`, `server_admin_key`, `sync_every`, `sync_dir`) still load for one
release, with a FutureWarning naming the new key (`config_aliases.py`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from ccapo_adapters.config import CounterfactualConfig
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ccapo.config import ScoringConfig
from ccapo_trainer.advantages import ScaleRewards
from ccapo_trainer.config_aliases import SECTION, FlatWeightingNames, move_flat_keys, section_fields, upgrade_override
from ccapo_trainer.loss import LossConfig, LossType

DEFAULT_OUTPUT_DIR = "runs/default"


def __getattr__(name: str) -> Any:
    if name == "TRAIN_SCHEME":  # the training default is everyone's default now
        import warnings

        from ccapo_adapters.config import DEFAULT_SCHEME

        warnings.warn("TRAIN_SCHEME is deprecated: use ccapo_adapters.config.DEFAULT_SCHEME", DeprecationWarning, 2)
        return DEFAULT_SCHEME
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class LoraSettings(BaseModel):
    """LoRA through peft (the paper: r=32, alpha=32, dropout 0.1 on every projection)."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(32, ge=1, description="rank of the adapter matrices")
    alpha: int = Field(32, ge=1, description="scaling numerator: updates are scaled by alpha / r")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the adapter's input")
    target_modules: str | list[str] = Field(
        "all-linear", description='module names to adapt, or "all-linear" for every linear layer but the LM head'
    )


class TrainConfig(FlatWeightingNames, BaseModel):
    """One training run: every key of a `ccapo train` config, TRL's names where TRL has one.

    Built by `load_config` from a YAML file and `key=value` overrides, or directly; an unknown key
    fails at once, naming it. The weighting is the `counterfactual` section.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # -- model ----------------------------------------------------------------------------------
    model: str | None = Field(None, description="HF id, local directory or GGUF file (None: the bundled default)")
    dtype: str | None = Field(None, description="weights dtype (default: fp32 on CPU, bf16 on CUDA)")
    bf16: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU)")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward: less memory, slower")
    lora: LoraSettings | None = Field(None, description="train a LoRA adapter instead of every weight")
    trust_remote_code: bool = Field(False, description="let transformers run the model repository's own code")

    # -- data -----------------------------------------------------------------------------------
    dataset: str = Field("gsm_symbolic", description="gsm8k, gsm_symbolic, a registered task, or a .jsonl/.parquet")
    dataset_kwargs: dict[str, Any] = Field(default_factory=dict, description="passed to the dataset's loader")
    train_split: str = Field("train", description="the dataset split to train on")
    eval_split: str = Field("test", description="the held-out split evaluation reads")
    max_train_problems: int | None = Field(None, ge=1, description="train on the first N problems (None: all)")
    system_prompt: str | None = Field(None, description="None: the paper's math-tutor prompt")
    max_prompt_length: int = Field(256, ge=1, description="longer prompts are skipped with a warning")

    # -- rollouts -------------------------------------------------------------------------------
    prompts_per_step: int = Field(4, ge=1, description="groups with a learning signal per optimizer step")
    num_generations: int = Field(8, ge=2, description="G: samples per prompt")
    max_completion_length: int = Field(768, ge=1, description="tokens a sampled completion may have")
    temperature: float = Field(0.6, gt=0, description="sampling temperature of the rollouts")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus sampling: the probability mass sampled from")
    generation_batch_size: int = Field(64, ge=1, description="sequences per generate() call")
    use_vllm: bool = Field(False, description="generate with colocated vLLM (CUDA, the [vllm] extra)")
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="GPU memory share vLLM may take")

    # -- rewards and advantages -----------------------------------------------------------------
    rewards: list[str] = Field(default_factory=lambda: ["correctness"], description="registered reward names")
    reward_weights: list[float] | None = Field(None, description="one weight per reward (None: all 1)")
    scale_rewards: ScaleRewards = Field(
        "group",
        description='advantages divided by the group\'s reward std ("group", GRPO), the batch\'s ("batch"), '
        'or not ("none", Dr. GRPO)',
    )
    dynamic_sampling: bool = Field(True, description="drop groups whose rewards are all equal and refill")
    max_sampling_rounds: int = Field(4, ge=1, description="generation rounds per step to fill the batch")
    mask_truncated_completions: bool = Field(False, description="overlong filter: no loss on unfinished samples")

    # -- loss -----------------------------------------------------------------------------------
    loss_type: LossType = Field(
        "dapo",
        description='token aggregation: "dapo" averages over every token of the batch, "grpo" over each '
        'sequence then the sequences, "dr_grpo" sums and divides by sequences x max_completion_length',
    )
    epsilon: float = Field(0.2, ge=0, description="PPO clip range below the ratio 1")
    epsilon_high: float | None = Field(None, ge=0, description="clip range above 1 (DAPO's clip-higher; None: epsilon)")
    beta: float = Field(0.0, ge=0, description="KL coefficient against the frozen initial policy (k3)")
    weight_kl: bool = Field(True, description="multiply the KL term by the token weights too, as the paper does")
    weight_positive_only: bool = Field(
        False, description="weight only completions with a positive advantage (the rest keep weight 1)"
    )
    num_iterations: int = Field(1, ge=1, description="optimizer passes over each batch (GRPO's mu)")

    # -- weighting ------------------------------------------------------------------------------
    counterfactual: CounterfactualConfig = Field(
        default_factory=CounterfactualConfig,
        description="the arm, weight scheme, scoring config and provider (a remote one's sync_dir: "
        "OUTPUT_DIR/sync unless set)",
    )

    # -- optimization ---------------------------------------------------------------------------
    steps: int = Field(500, ge=1, description="optimizer steps to train")
    learning_rate: float = Field(2.5e-5, gt=0, description="AdamW's peak learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW's decoupled weight decay")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW's beta1 and beta2")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up from 0 over this many steps")
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="the learning rate after warm-up: constant, or decayed to 0 at the last step"
    )
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip the gradient's global norm (None: no clipping)")
    micro_batch_size: int = Field(8, ge=1, description="sequences per forward/backward (gradient accumulation)")
    seed: int = Field(0, description="seeds sampling, data order and initialization")

    # -- output, checkpoints, evaluation --------------------------------------------------------
    output_dir: str = Field(DEFAULT_OUTPUT_DIR, description="metrics, checkpoints and the saved config go here")
    save_every: int = Field(50, ge=0, description="checkpoint every N steps (0: only at the end)")
    keep_checkpoints: int = Field(2, ge=1, description="the newest N checkpoints are kept, older ones deleted")
    eval_every: int = Field(0, ge=0, description="greedy held-out accuracy every N steps (0: never)")
    eval_problems: int = Field(200, ge=1, description="held-out problems per evaluation")
    eval_batch_size: int = Field(32, ge=1, description="problems per generate() call during evaluation")
    tensorboard: bool = Field(False, description="also write TensorBoard events (the [tensorboard] extra)")
    log_completions: bool = Field(
        False, description="write every sampled completion and its reward to completions.jsonl (all processes')"
    )
    log_param_checksum: bool = Field(
        False,
        description="log every process's SHA-256 of the trainable weights per step as params/sha256 "
        "(a multi-process run stops if they differ)",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_weighting_section(cls, data: Any) -> Any:
        """Flat weighting names move into the section; a remote scorer syncs from OUTPUT_DIR/sync by default."""
        if not isinstance(data, dict):
            return data
        data = move_flat_keys(dict(data))
        section = section_fields(data.get(SECTION))
        remote = section.get("provider") == "remote" and section.get("weighting") != "uniform"
        if remote and not section.get("sync_dir"):
            section["sync_dir"] = str(Path(data.get("output_dir") or DEFAULT_OUTPUT_DIR) / "sync")
        data[SECTION] = section
        return data

    @field_validator(SECTION)
    @classmethod
    def _no_ray_handle(cls, section: CounterfactualConfig) -> CounterfactualConfig:
        if section.provider == "ray":
            raise ValueError(
                'ccapo train scores in-process or on a scoring server: use provider "inprocess" or "remote" '
                "(a Ray Serve deployment answers HTTP too: point server_url at its proxy)"
            )
        return section

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        _check_scoring(self.counterfactual)
        if self.reward_weights is not None and len(self.reward_weights) != len(self.rewards):
            raise ValueError(f"{len(self.reward_weights)} reward_weights for {len(self.rewards)} rewards")
        return self

    @property
    def loss(self) -> LossConfig:
        return LossConfig(
            loss_type=self.loss_type,
            epsilon=self.epsilon,
            epsilon_high=self.epsilon_high,
            beta=self.beta,
            weight_kl=self.weight_kl,
            weight_positive_only=self.weight_positive_only,
            max_completion_length=self.max_completion_length,
        )

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class ConfigError(ValueError):
    """A config file or override the user must fix."""


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """A config from a YAML file (or defaults), with `key=value` overrides applied on top.

    Overrides of the flat weighting names reach their new keys, so they win over the file's section.
    """
    raw = _read_yaml(Path(path)) if path is not None else {}
    return parse_config(apply_overrides(raw, [upgrade_override(o) for o in overrides or []]))


def parse_config(raw: dict[str, Any]) -> TrainConfig:
    """A validated config from raw settings; what is wrong comes back as one line per setting."""
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as err:
        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        raise ConfigError("invalid training config:\n" + "\n".join(lines)) from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`raw` with each dotted `key=value` set in place (values parsed as YAML); returns `raw`."""
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not key:
            example = "learning_rate=1e-5 or counterfactual.scoring.intervention=pad"
            raise ConfigError(f"override {override!r} is not key=value (for example {example})")
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str) and _EXPONENT_FLOAT.fullmatch(parsed):
            parsed = float(parsed)  # YAML 1.1 reads "1e-5" (no dot) as a string
        _set_dotted(raw, key.strip(), parsed)
    return raw


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.resolve() in seen:
        raise ConfigError(f"config {path} includes itself")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, not {type(data).__name__}")
    try:  # before merging: an arm file's flat name must override its base file's section
        data = move_flat_keys(data)
    except ValueError as err:
        raise ConfigError(f"{path}: {err}") from None
    base = data.pop("include", None)
    if base is None:
        return data
    merged = _read_yaml(path.parent / base, (*seen, path.resolve()))
    _merge(merged, data)
    return merged


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"cannot set {key}: {part} is not a section")
        node = child
    node[leaf] = value


def _check_scoring(section: CounterfactualConfig) -> None:
    """The section's scoring config against `ccapo.ScoringConfig`; errors name the dotted key to fix."""
    try:
        ScoringConfig.model_validate(section.scoring_config())
    except ValidationError as err:
        errors = [
            {
                "type": e["type"],
                # The scheme is the section's own key; every other field sits under scoring.
                "loc": (SECTION, "scheme") if e["loc"] == ("weights", "scheme") else (SECTION, "scoring", *e["loc"]),
                "input": e["input"],
                "ctx": e.get("ctx", {}),
            }
            for e in err.errors()
        ]
        raise ValidationError.from_exception_data(err.title, errors) from None
