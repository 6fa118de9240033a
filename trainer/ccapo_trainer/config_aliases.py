"""The flat weighting names a training config had before the `counterfactual` section, kept for one release.

`weighting`, `provider`, `scoring`, `server_url`, `server_api_key`, `server_admin_key`,
`sync_every` and `sync_dir` were top-level settings; they now live in the section (`ccapo train`
and every RL adapter share `CounterfactualConfig`). Old keys in YAML files, `key=value`
overrides and `TrainConfig(...)` arguments still load, each with a FutureWarning (end users see
it, unlike a DeprecationWarning) naming its new key; reading them off a `TrainConfig` still works,
with a DeprecationWarning.
"""

from __future__ import annotations

import warnings
from typing import Any

from ccapo_adapters.config import SECTION, CounterfactualConfig

from ccapo.config import ScoringConfig

# Old top-level name -> its key in the section.
FLAT_NAMES = {
    "weighting": "weighting",
    "provider": "provider",
    "scoring": "scoring",
    "server_url": "server_url",
    "server_api_key": "api_key",
    "server_admin_key": "admin_key",
    "sync_every": "sync_every",
    "sync_dir": "sync_dir",
}
_SCHEME = "scoring.weights.scheme"  # the section keeps the scheme in its own key


def move_flat_keys(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with every flat weighting name moved into the section; a name set in both places must agree."""
    flat = [name for name in FLAT_NAMES if name in data]
    if not flat:
        return data
    data = dict(data)
    section = section_fields(data.get(SECTION))
    for name in flat:
        value = data.pop(name)
        _warn_key(name, f"{SECTION}.{FLAT_NAMES[name]}")
        if name == "scoring":
            value = _fields(value)
            weights = _fields(value.get("weights")) if isinstance(value, dict) else None
            if isinstance(weights, dict) and "scheme" in weights:
                _put(section, "scheme", weights.pop("scheme"), _SCHEME)
                value = {**value, "weights": weights}
        _put(section, FLAT_NAMES[name], value, name)
    data[SECTION] = section
    return data


def upgrade_override(override: str) -> str:
    """A `key=value` override with a flat weighting name rewritten to its key in the section."""
    key, sep, value = override.partition("=")
    head, _, rest = key.strip().partition(".")
    if not sep or head not in FLAT_NAMES:
        return override
    new = f"{SECTION}.scheme" if key.strip() == _SCHEME else ".".join(filter(None, (SECTION, FLAT_NAMES[head], rest)))
    _warn_key(key.strip(), new)
    return f"{new}={value}"


def section_fields(section: Any) -> dict[str, Any]:
    """The section as the fields it was given (a validated `CounterfactualConfig` keeps only those)."""
    if isinstance(section, CounterfactualConfig):
        return section.model_dump(exclude_unset=True)
    return dict(section or {})


class FlatWeightingNames:
    """`TrainConfig.weighting` and the other flat names, read from the section (deprecated)."""

    counterfactual: CounterfactualConfig

    @property
    def weighting(self) -> str:
        return self._section("weighting").weighting

    @property
    def provider(self) -> str:
        return self._section("provider").provider

    @property
    def scoring(self) -> ScoringConfig:
        """The scoring config with the section's scheme as written (unset: the one its arm applies)."""
        section = self._section("scoring")
        fields = section.scoring_config()
        fields["weights"]["scheme"] = section.scheme or section.weight_scheme
        return ScoringConfig.model_validate(fields)

    @property
    def server_url(self) -> str | None:
        url = self._section("server_url", "server_url").server_url
        return ",".join(url) if isinstance(url, list) else url

    @property
    def server_api_key(self) -> str | None:
        return self._section("server_api_key", "api_key").api_key

    @property
    def server_admin_key(self) -> str | None:
        return self._section("server_admin_key", "admin_key").admin_key

    @property
    def sync_every(self) -> int:
        return self._section("sync_every").sync_every or 0

    @property
    def sync_dir(self) -> str | None:
        return self._section("sync_dir").sync_dir

    def _section(self, name: str, new: str | None = None) -> CounterfactualConfig:
        warnings.warn(
            f"TrainConfig.{name} is deprecated: read config.{SECTION}.{new or name}", DeprecationWarning, stacklevel=3
        )
        return self.counterfactual


def _warn_key(old: str, new: str) -> None:
    warnings.warn(
        f"config key {old!r} is deprecated: write {new!r} ({old!r} stops loading in the next release)",
        FutureWarning,
        stacklevel=4,
    )


def _fields(value: Any) -> Any:
    """A pydantic model (a `ccapo.ScoringConfig`) as its fields, a mapping as a dict, anything else as is."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return dict(value) if isinstance(value, dict) else value


def _put(section: dict[str, Any], key: str, value: Any, old: str) -> None:
    if section.get(key) not in (None, value):
        raise ValueError(
            f"{old} and {SECTION}.{key} are both set and differ ({value!r}, {section[key]!r}): keep {SECTION}.{key}"
        )
    section[key] = value
