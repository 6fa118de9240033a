"""How an RL trainer gets counterfactual token weights: one configuration for `ccapo train` and every adapter.

`CounterfactualConfig` holds the arm (`weighting`), the weight `scheme`, where the weights come
from (`provider`, its server, keys and policy sync) and the scoring config (`scoring`:
`ccapo.ScoringConfig`'s fields as a mapping). It needs pydantic only, never `ccapo`, so verl and
OpenRLHF load it beside their own transformers: the scorer validates `scoring` (in-process when
the provider is built, a server when the provider checks it, `ccapo train` when its config loads).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ccapo_adapters.batch import Weighting, arm_scheme

Provider = Literal["inprocess", "remote", "ray"]
PROVIDERS: tuple[Provider, ...] = get_args(Provider)
# Mean 1 over the reasoning, 1 where nothing was probed: the gradient keeps the stock scale. "paper"
# reproduces the paper (mean about 2-3 on scored rows, 1.0 on unscorable ones). The core's own default
# (`ccapo.WeightConfig().scheme`), which this package cannot import; tests/integrations holds the two equal.
DEFAULT_SCHEME = "normalized"
# The name of these settings in a training config: `ccapo train`'s section, verl's, and OpenRLHF's
# `--counterfactual FILE` (a JSON file of the fields).
SECTION = "counterfactual"
_OLD_SECTION = "ccapo"  # verl's section before 0.2.0
# Fields of the adapters' first configuration that are the scoring config's own (one release of grace).
_SCORING_FIELDS = ("segmenter", "intervention")


class CounterfactualConfig(BaseModel):
    """The weighting settings every trainer shares (`ccapo train`'s `counterfactual` section, each adapter's).

    - `weighting`, the arm: "counterfactual", its controls "inverted" and "random", or "uniform"
      (scores nothing, needs no scorer).
    - `scheme`: how drops become weights in the counterfactual arm, "normalized" (mean 1, the
      default) or "paper". The arm decides the scheme in one place (`ccapo_adapters.batch.arm_scheme`):
      the controls apply their own, the paper scheme's ranking reversed or drawn at random, so
      with them `scheme` is unset or "paper"; any other scheme is an error, never overridden.
    - `scoring`: any other field of the scoring config, e.g. {"segmenter": "sentence",
      "intervention": "pad", "max_spans": 8}, or {"preset": "aligntune"} for what the authors' released
      code computes (scheme then "paper" unless set); `scoring.weights.scheme` is another spelling of `scheme`.
    - `provider`: "inprocess" scores with the policy model itself (no second copy; needs `ccapo`),
      "remote" on the scoring server(s) at `server_url` (a URL, several separated by commas, or a
      list), "ray" through a Ray Serve deployment handle (`ray_app` names the application).
    - Policy sync (remote and Ray): every `sync_every` optimizer steps the trainer saves the policy
      to `sync_dir`, a path the scorer can read, and has the scorer load it (which needs the
      server's `admin_key`); the first push happens before the first scored step. Unset,
      `sync_every` is 1 once there is a `sync_dir` (`ccapo train` defaults it to OUTPUT_DIR/sync;
      the adapters never guess one) and no sync otherwise, which the provider warns about: the
      weights then come from a model that is not the policy. 0 never syncs, on purpose.
    - `swap_wait_s`: how long a policy push waits for the scorer to serve it; a slower load stays
      pending (training goes on with the scorer's live model, the lag counted) and is looked at again
      at the next step. `request_timeout_s`: each request's read timeout.
    - `model_id`: the model the server must report at start-up; `max_batch_tokens`: tokens per
      forward pass of the in-process scorer.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    weighting: Weighting = Field(
        "counterfactual", description='the arm: "counterfactual", the controls "inverted" and "random", or "uniform"'
    )
    scheme: str | None = Field(
        None, description='drops to weights: "normalized" (mean 1) or "paper" (None: the arm\'s default)'
    )
    provider: Provider = Field(
        "inprocess", description='"inprocess" (the policy scores itself), "remote" (a server) or "ray" (Serve)'
    )
    scoring: dict[str, Any] = Field(
        default_factory=dict, description="fields of ccapo.ScoringConfig, e.g. segmenter, intervention, estimator"
    )
    server_url: str | list[str] | None = Field(None, description='"remote": the server URL(s), comma-separated')
    api_key: str | None = Field(None, description="the scoring server's API key (remote and ray)")
    admin_key: str | None = Field(None, description="the server's admin key, which policy sync needs")
    sync_every: int | None = Field(
        None, ge=0, description="push the policy every N optimizer steps (None: 1 with a sync_dir; 0: never)"
    )
    sync_dir: str | None = Field(None, description="where pushed policies are saved; the scorer must read it")
    model_id: str | None = Field(None, description="the model the server must report at start-up")
    max_batch_tokens: int | None = Field(None, ge=1, description='"inprocess": tokens per scoring forward pass')
    ray_app: str = Field("ccapo", description='"ray": the Serve application\'s name')
    request_timeout_s: float = Field(60.0, gt=0, description="each scoring request's read timeout")
    swap_wait_s: float = Field(
        30.0, ge=0, description="how long a push waits for the scorer to serve it before training goes on"
    )

    @model_validator(mode="before")
    @classmethod
    def _one_place_per_setting(cls, data: Any) -> Any:
        """The scheme lives in `scheme`, the scoring config's fields in `scoring`; unset sync_every follows sync_dir."""
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        scoring = _as_dict(data.get("scoring", {}))
        if not isinstance(scoring, dict):
            return data  # the field validator names what is wrong
        for name in _SCORING_FIELDS:
            if name in data:
                warnings.warn(
                    f"CounterfactualConfig({name}=...) is deprecated: put it in scoring={{{name!r}: ...}}",
                    FutureWarning,
                    stacklevel=2,
                )
                _set_once(scoring, name, data.pop(name), f"{name} and scoring.{name}")
        weights = _as_dict(scoring.get("weights", {}))
        if isinstance(weights, dict) and "scheme" in weights:
            _set_once(data, "scheme", weights.pop("scheme"), "scheme and scoring.weights.scheme")
            scoring["weights"] = weights
            if not weights:
                del scoring["weights"]
        data["scoring"] = scoring
        syncable = data.get("provider") in ("remote", "ray") and data.get("weighting") != "uniform"
        if syncable and data.get("sync_every") is None and data.get("sync_dir"):
            data["sync_every"] = 1
        return data

    @field_validator("scoring", mode="before")
    @classmethod
    def _a_mapping(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise ValueError(f"scoring must be a mapping of scoring-config fields, got {type(value).__name__}")
        return value

    @field_validator("server_url", mode="before")
    @classmethod
    def _urls(cls, value: Any) -> Any:
        """A comma-separated string is several servers; surrounding blanks and empty entries go."""
        if isinstance(value, str) and "," in value:
            value = value.split(",")
        if isinstance(value, list | tuple):
            value = [str(url).strip() for url in value if str(url).strip()]
        elif isinstance(value, str):
            value = value.strip()
        return value or None

    @model_validator(mode="after")
    def _consistent(self) -> CounterfactualConfig:
        arm_scheme(self.weighting, self.scheme)  # a scheme that contradicts the arm fails here
        if not self.scores:
            return self  # nothing is scored: no server, handle or sync is needed
        if self.provider == "remote" and not self.server_url:
            raise ValueError('provider "remote" needs server_url (the scoring server, e.g. http://127.0.0.1:8000)')
        if self.sync_every and self.provider == "inprocess":
            raise ValueError(
                "sync_every pushes the policy to a scoring server: it needs provider 'remote' or 'ray' "
                "(in-process scoring is the policy itself)"
            )
        if self.sync_every and not self.sync_dir:
            raise ValueError("sync_every needs provider='remote' or 'ray' and a sync_dir the scorer can read")
        return self

    @property
    def scores(self) -> bool:
        """Whether this arm scores anything (every arm but "uniform")."""
        return self.weighting != "uniform"

    @property
    def weight_scheme(self) -> str:
        """The weight scheme the scorer applies: the arm's, else `scheme`, else the default ("paper" under a
        scoring preset, which reproduces the authors' mapping)."""
        return arm_scheme(self.weighting, self.scheme) or ("paper" if self.scoring.get("preset") else DEFAULT_SCHEME)

    def scoring_config(self) -> dict[str, Any]:
        """The scoring config the scorer gets, as a dict (both scorers take one and validate it)."""
        weights = {**self.scoring.get("weights", {}), "scheme": self.weight_scheme}
        return {**self.scoring, "weights": weights}


def section_of(config: Mapping[str, Any]) -> Any:
    """A framework config's `counterfactual` section (empty when it has none).

    The section's old name in verl's config, `ccapo`, still loads, with a FutureWarning.
    """
    section, old = config.get(SECTION), config.get(_OLD_SECTION)
    if old is None:
        return section if section is not None else {}
    if section is not None:
        raise ValueError(f"the config has a {SECTION!r} section and one under its old name {_OLD_SECTION!r}: keep one")
    warnings.warn(
        f"the config section {_OLD_SECTION!r} is now {SECTION!r} (as in ccapo train's config): rename it",
        FutureWarning,
        stacklevel=2,
    )
    return old


def _as_dict(value: Any) -> Any:
    """A pydantic model (a `ccapo.ScoringConfig`, say) as its fields; a mapping as a dict; anything else as is."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return dict(value) if isinstance(value, Mapping) else value


def _set_once(target: dict[str, Any], key: str, value: Any, names: str) -> None:
    if target.get(key) not in (None, value):
        raise ValueError(f"{names} are both set and differ ({target[key]!r}, {value!r}): set one")
    target[key] = value
