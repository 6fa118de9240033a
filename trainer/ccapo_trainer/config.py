"""A training run's configuration: one flat, validated model with TRL's names, read from YAML plus overrides.

`load_config("configs/x.yaml", ["lr=1e-5", "scoring.intervention=pad"])` reads the file (which may
`include:` a base file, relative to itself), applies `key=value` overrides (values parsed as YAML,
dotted keys reach into `scoring` and `lora`) and validates the result, so a typo fails at once
with the key's name instead of hours into a run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from ccapo_adapters.batch import Weighting
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ccapo.config import ScoringConfig
from ccapo_trainer.advantages import ScaleRewards
from ccapo_trainer.loss import LossConfig, LossType

TRAIN_SCHEME = "normalized"  # mean 1 over the reasoning: the stock gradient scale


class LoraSettings(BaseModel):
    """LoRA through peft (the paper: r=32, alpha=32, dropout 0.1 on every projection)."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(32, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # -- model ----------------------------------------------------------------------------------
    model: str | None = Field(None, description="HF id, local directory or GGUF file (None: the bundled default)")
    dtype: str | None = Field(None, description="weights dtype (default: fp32 on CPU, bf16 on CUDA)")
    bf16: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU)")
    gradient_checkpointing: bool = False
    lora: LoraSettings | None = Field(None, description="train a LoRA adapter instead of every weight")
    trust_remote_code: bool = False

    # -- data -----------------------------------------------------------------------------------
    dataset: str = Field("gsm_symbolic", description="gsm8k, gsm_symbolic, a registered task, or a .jsonl/.parquet")
    dataset_kwargs: dict[str, Any] = Field(default_factory=dict, description="passed to the dataset's loader")
    train_split: str = "train"
    eval_split: str = "test"
    max_train_problems: int | None = Field(None, ge=1)
    system_prompt: str | None = Field(None, description="None: the paper's math-tutor prompt")
    max_prompt_length: int = Field(256, ge=1, description="longer prompts are skipped with a warning")

    # -- rollouts -------------------------------------------------------------------------------
    prompts_per_step: int = Field(4, ge=1, description="groups with a learning signal per optimizer step")
    num_generations: int = Field(8, ge=2, description="G: samples per prompt")
    max_completion_length: int = Field(768, ge=1)
    temperature: float = Field(0.6, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    generation_batch_size: int = Field(64, ge=1, description="sequences per generate() call")
    use_vllm: bool = Field(False, description="generate with colocated vLLM (CUDA, the [vllm] extra)")
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="GPU memory share vLLM may take")

    # -- rewards and advantages -----------------------------------------------------------------
    rewards: list[str] = Field(default_factory=lambda: ["correctness"], description="registered reward names")
    reward_weights: list[float] | None = None
    scale_rewards: ScaleRewards = "group"
    dynamic_sampling: bool = Field(True, description="drop groups whose rewards are all equal and refill")
    max_sampling_rounds: int = Field(4, ge=1, description="generation rounds per step to fill the batch")
    mask_truncated_completions: bool = Field(False, description="overlong filter: no loss on unfinished samples")

    # -- loss -----------------------------------------------------------------------------------
    loss_type: LossType = "dapo"
    epsilon: float = Field(0.2, ge=0)
    epsilon_high: float | None = Field(None, ge=0)
    beta: float = Field(0.0, ge=0, description="KL coefficient against the frozen initial policy (k3)")
    weight_kl: bool = True
    weight_positive_only: bool = False
    num_iterations: int = Field(1, ge=1, description="optimizer passes over each batch (GRPO's mu)")

    # -- weighting ------------------------------------------------------------------------------
    weighting: Weighting = "counterfactual"
    provider: Literal["inprocess", "remote"] = "inprocess"
    # The library's default scheme is the paper's (weights average about 2-3 on scored rows, 1.0 on unscorable
    # ones, which raises the effective learning rate); training defaults to mean 1. configs/paper*.yaml set "paper".
    scoring: ScoringConfig = Field(default_factory=lambda: ScoringConfig(weights={"scheme": TRAIN_SCHEME}))
    server_url: str | None = Field(None, description='provider "remote": the scoring server (or several, comma)')
    server_api_key: str | None = None
    server_admin_key: str | None = None
    sync_every: int = Field(1, ge=0, description="remote: send the policy to the server every N steps (0: never)")
    sync_dir: str | None = Field(None, description="remote: where synced policies go, readable by the server")

    # -- optimization ---------------------------------------------------------------------------
    steps: int = Field(500, ge=1)
    learning_rate: float = Field(2.5e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(0, ge=0)
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"
    max_grad_norm: float | None = Field(1.0, gt=0)
    micro_batch_size: int = Field(8, ge=1, description="sequences per forward/backward (gradient accumulation)")
    seed: int = 0

    # -- output, checkpoints, evaluation --------------------------------------------------------
    output_dir: str = "runs/default"
    save_every: int = Field(50, ge=0, description="checkpoint every N steps (0: only at the end)")
    keep_checkpoints: int = Field(2, ge=1)
    eval_every: int = Field(0, ge=0, description="greedy held-out accuracy every N steps (0: never)")
    eval_problems: int = Field(200, ge=1)
    eval_batch_size: int = Field(32, ge=1)
    tensorboard: bool = False
    log_completions: bool = Field(
        False, description="write every sampled completion and its reward to completions.jsonl (all processes')"
    )
    log_param_checksum: bool = Field(
        False,
        description="log every process's SHA-256 of the trainable weights per step as params/sha256 "
        "(a multi-process run stops if they differ)",
    )

    @field_validator("scoring", mode="before")
    @classmethod
    def _train_scheme_by_default(cls, value: Any) -> Any:
        """A scoring mapping without a weight scheme gets the trainer's default, not the library's."""
        if isinstance(value, dict):
            weights = value.get("weights")
            if weights is None or (isinstance(weights, dict) and "scheme" not in weights):
                value = {**value, "weights": {**(weights or {}), "scheme": TRAIN_SCHEME}}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.provider == "remote" and self.weighting != "uniform" and not self.server_url:
            raise ValueError('provider "remote" needs server_url (the scoring server, e.g. http://127.0.0.1:8000)')
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
    """A config from a YAML file (or defaults), with `key=value` overrides applied on top."""
    return parse_config(apply_overrides(_read_yaml(Path(path)) if path is not None else {}, overrides or []))


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
            example = "learning_rate=1e-5 or scoring.intervention=pad"
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
