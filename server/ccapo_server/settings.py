"""Server settings: CCAPO_* environment variables, overridden by command-line flags."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
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

    max_batch_tokens: int = Field(
        16384,
        ge=1,
        description="tokens a server batch may hold: each trace's base pass plus its counterfactual branches",
    )
    engine_batch_tokens: int | None = Field(None, ge=1, description="tokens per forward pass; None: the Scorer default")
    max_wait_ms: float = Field(10, ge=0, description="how long the first queued trace waits for others to join it")
    max_queue_traces: int = Field(256, ge=1, description="traces waiting to be scored before new requests get 429")
    request_timeout_s: float = Field(60, gt=0, description="deadline of a scoring request, queueing included")

    max_traces_per_request: int = Field(64, ge=1)
    max_tokens_per_trace: int = Field(4096, ge=1, description="tokens the model reads for one trace")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1)

    api_key: str | None = Field(None, description="bearer key for the scoring routes; None: open")
    admin_key: str | None = Field(None, description="bearer key for POST /v1/model; None: the route answers 404")
    model_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="directories POST /v1/model may load local models from"
    )
    allow_hub_models: bool = Field(False, description="let POST /v1/model load hub ids (downloads arbitrary models)")

    warmup: bool = Field(True, description="score one bundled example before reporting ready")
    graceful_timeout_s: int = Field(30, ge=0, description="on SIGTERM, how long in-flight requests may take")

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
