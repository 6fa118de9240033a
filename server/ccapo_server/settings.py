"""Server settings: CCAPO_* environment variables, overridden by command-line flags."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ServerSettings(BaseSettings):
    """Everything the scoring server can be told; each field reads `CCAPO_<NAME>` from the environment."""

    # Empty variables count as unset: docker-compose passes `${CCAPO_MODEL:-}` through as "".
    model_config = SettingsConfigDict(env_prefix="CCAPO_", extra="forbid", env_ignore_empty=True)

    model: str | None = Field(None, description="hub id, local directory or .gguf file; None: the bundled default")
    device: str | None = Field(None, description="torch device; None: CUDA when present, else CPU")
    dtype: str | None = Field(None, description="torch dtype name; None: fp32 on CPU, bf16 on accelerators")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    server_batch_tokens: int = Field(
        16384,
        ge=1,
        description="feed tokens one server batch may hold (each trace's base pass plus its counterfactual rows); "
        "the engine splits a batch into forward passes of engine_batch_tokens",
    )
    max_batch_tokens: int | None = Field(
        None, ge=1, description="deprecated name of server_batch_tokens (CCAPO_MAX_BATCH_TOKENS); kept one release"
    )
    engine_batch_tokens: int | None = Field(
        None, ge=1, description="padded tokens per engine forward pass; None: the Scorer default"
    )
    max_wait_ms: float = Field(10, ge=0, description="how long the first queued trace waits for others to join it")
    max_queue_traces: int = Field(256, ge=1, description="traces waiting to be scored before new requests get 429")
    max_queue_tokens: int = Field(
        262144, ge=1, description="feed tokens waiting to be scored before new requests get 429"
    )
    request_timeout_s: float = Field(60, gt=0, description="deadline of a scoring request, preparation included")
    prepare_threads: int = Field(4, ge=1, description="requests tokenized at once; more wait their turn")

    max_traces_per_request: int = Field(64, ge=1)
    # Long enough for the 2k-16k-token traces of long reasoning (docs/long-reasoning.md): a 16k trace with
    # 64 spans under the horizon estimator, or a 4k trace with 40 spans under exact, fits one trace's budget.
    max_tokens_per_trace: int = Field(16384, ge=1, description="tokens the model reads for one trace")
    max_counterfactuals_per_trace: int = Field(64, ge=1, description="counterfactual rows (probed spans) per trace")
    max_feed_tokens_per_trace: int = Field(
        131072, ge=1, description="feed tokens (base pass plus counterfactual rows) one trace may cost"
    )
    max_feed_tokens_per_request: int = Field(131072, ge=1, description="feed tokens one request may cost in all")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1)

    api_key: str | None = Field(None, description="bearer key for the scoring routes; None: open")
    admin_key: str | None = Field(None, description="bearer key for POST /v1/model; None: the route answers 404")
    model_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="directories POST /v1/model may load local models from"
    )
    allow_hub_models: bool = Field(False, description="let POST /v1/model load hub ids (downloads arbitrary models)")

    warmup: bool = Field(True, description="score one bundled example before reporting ready")
    graceful_timeout_s: int = Field(
        30, ge=0, description="on SIGTERM, how long queued and running requests may take before they get 503"
    )
    shutdown_timeout_s: float = Field(
        10, gt=0, description="after the grace period, how long the engine may take to stop before the process exits"
    )

    @model_validator(mode="after")
    def _deprecated_batch_tokens(self) -> ServerSettings:
        if self.max_batch_tokens is not None:
            warnings.warn(
                "CCAPO_MAX_BATCH_TOKENS / --max-batch-tokens is deprecated: use CCAPO_SERVER_BATCH_TOKENS / "
                "--server-batch-tokens (the engine's forward-pass budget is CCAPO_ENGINE_BATCH_TOKENS)",
                FutureWarning,
                stacklevel=2,
            )
            if "server_batch_tokens" not in self.model_fields_set:
                self.server_batch_tokens = self.max_batch_tokens
        return self

    @model_validator(mode="after")
    def _budgets_nest(self) -> ServerSettings:
        # A request the queue could never hold would wait for 429s forever instead of getting a 422.
        if not self.max_feed_tokens_per_trace <= self.max_feed_tokens_per_request <= self.max_queue_tokens:
            raise ValueError(
                "need max_feed_tokens_per_trace <= max_feed_tokens_per_request <= max_queue_tokens, got "
                f"{self.max_feed_tokens_per_trace}, {self.max_feed_tokens_per_request}, {self.max_queue_tokens}"
            )
        return self

    @field_validator("model_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        # From the environment: a JSON list, or directories separated like PATH.
        if isinstance(value, str):
            stripped = value.strip()
            if stripped.startswith("["):
                return json.loads(stripped)
            return [part for part in stripped.split(os.pathsep) if part]
        return value
