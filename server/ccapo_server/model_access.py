"""Which models POST /v1/model may load: local directories under the allow-listed roots, hub ids when allowed.

Loading a model runs its code paths on this machine and may read any file it names, so an admin
request names a model, never an arbitrary path.
"""

from __future__ import annotations

import re
from pathlib import Path

from ccapo.models import DEFAULT_MODEL
from ccapo_server.errors import ApiError
from ccapo_server.settings import ServerSettings

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_BUNDLED = ("default", DEFAULT_MODEL)


def resolve_model_source(spec: str, settings: ServerSettings) -> str:
    """What to load for `spec`: a resolved local path, a hub id, or the bundled default.

    A relative path is looked up under each model root in turn, never under the server's working
    directory. Raises `ApiError`: forbidden outside the roots or for hub ids when they are off,
    invalid_request for a path inside a root that does not exist.
    """
    spec = spec.strip()
    if spec in _BUNDLED:
        return spec
    roots = [root.expanduser().resolve() for root in settings.model_roots]
    path = Path(spec).expanduser()
    candidates = [path.resolve()] if path.is_absolute() else [(root / path).resolve() for root in roots]
    allowed = [c for c in candidates if any(c.is_relative_to(root) for root in roots)]
    existing = [c for c in allowed if c.exists()]
    if existing:
        return str(existing[0])
    if not path.is_absolute() and _HUB_ID.fullmatch(spec) and path.suffix != ".gguf":
        if settings.allow_hub_models:
            return spec
        raise ApiError(
            "forbidden",
            f"{spec!r} is not under any model root and loading hub models is off (CCAPO_ALLOW_HUB_MODELS)",
        )
    if not allowed:
        where = ", ".join(str(root) for root in roots) or "none configured; set CCAPO_MODEL_ROOTS"
        raise ApiError("forbidden", f"{spec!r} is outside the allowed model roots ({where})")
    raise ApiError("invalid_request", f"model: {spec!r} does not exist under the allowed model roots")
