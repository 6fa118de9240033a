"""Which models POST /v1/model may load: local directories under the allow-listed roots, hub ids when allowed.

Loading a model runs its code paths on this machine and may read any file it names, so an admin
request names a model, never an arbitrary path.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ccapo.models import DEFAULT_MODEL
from ccapo_server.errors import ApiError
from ccapo_server.settings import ServerSettings

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_BUNDLED = ("default", DEFAULT_MODEL)


def resolve_model_source(spec: str, settings: ServerSettings) -> str:
    """What to load for `spec`: a resolved local path, a hub id, or "default" for the bundled model.

    A relative path is looked up under each model root in turn, never under the server's working
    directory, and every file a local model holds must resolve inside a root too (a symlink out is
    refused). Raises `ApiError`: forbidden outside the roots or for hub ids when they are off,
    invalid_request for a name that cannot be a path or does not exist under the roots.
    """
    return choose_model(spec, settings)[0]


def choose_model(spec: str, settings: ServerSettings) -> tuple[str, str]:
    """`resolve_model_source(spec)`, and the model's public name: what the admin asked for, never
    an absolute path of this machine (clients see it in responses)."""
    spec = spec.strip()
    if any(ord(c) < 32 or ord(c) == 127 for c in spec):
        raise ApiError("invalid_request", "model: the name holds a control character (such as NUL); remove it")
    if spec in _BUNDLED:
        return "default", DEFAULT_MODEL
    roots = [root.expanduser().resolve() for root in settings.model_roots]
    path = Path(spec).expanduser()
    try:
        candidates = [path.resolve()] if path.is_absolute() else [(root / path).resolve() for root in roots]
        allowed = [(c, root) for c in candidates for root in roots if c.is_relative_to(root)]
        existing = [(c, root) for c, root in allowed if c.exists()]
    except (OSError, RuntimeError) as err:  # a name too long for the file system, a symlink loop
        raise ApiError(
            "invalid_request", f"model: {spec[:100]!r} cannot be a path here: {getattr(err, 'strerror', None) or err}"
        ) from None
    if existing:
        found, root = existing[0]
        _check_inside(found, roots)
        return str(found), str(found.relative_to(root))
    if not path.is_absolute() and _HUB_ID.fullmatch(spec) and path.suffix != ".gguf" and "/" in spec:
        if settings.allow_hub_models:
            return spec, spec
        raise ApiError(
            "forbidden",
            f"{spec!r} does not exist under the model roots, and loading hub models is off (CCAPO_ALLOW_HUB_MODELS)",
        )
    if not allowed:
        where = "the allowed model roots" if roots else "any model root (none configured; set CCAPO_MODEL_ROOTS)"
        raise ApiError("forbidden", f"{spec!r} is outside {where}")
    raise ApiError("invalid_request", f"model: {spec!r} does not exist under the allowed model roots")


def startup_name(source: str | None, settings: ServerSettings) -> str | None:
    """The public name of the model the server starts with when it lies under a model root: its path
    relative to that root, as a swapped-in model is named. None: not under a root (its name stays as
    the operator gave it)."""
    if not source:
        return None
    try:
        found = Path(source).expanduser().resolve()
        roots = [root.expanduser().resolve() for root in settings.model_roots]
    except (OSError, RuntimeError):
        return None
    return next((str(found.relative_to(root)) for root in roots if found.is_relative_to(root) and found != root), None)


def _check_inside(model: Path, roots: list[Path]) -> None:
    """Every file (and linked directory) of a local model must resolve inside a root: loading reads them all."""
    entries = [model]
    for folder, dirs, files in os.walk(model):  # links are checked, never followed
        entries += [Path(folder, name) for name in dirs + files]
    for entry in entries:
        if not any(entry.resolve().is_relative_to(root) for root in roots):
            raise ApiError(
                "forbidden",
                f"{entry.relative_to(model.parent)} links outside the allowed model roots; copy the file in",
            )
