"""Bearer-key guards for the scoring routes and the admin route, as FastAPI dependencies."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ccapo_server.errors import ApiError

Guard = Callable[..., Awaitable[None]]

# auto_error=False: a missing key must answer in the standard error body, not FastAPI's own.
_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def api_key_guard(key: str | None) -> Guard:
    """Scoring routes: open when `key` is None; otherwise a missing or wrong key is 401."""

    async def guard(credentials: Credentials) -> None:
        if key is None:
            return
        if credentials is None:
            raise ApiError("unauthorized", "this server needs an API key: send 'Authorization: Bearer <key>'")
        if not _same(credentials.credentials, key):
            raise ApiError("unauthorized", "the API key is wrong")

    return guard


def admin_key_guard(key: str | None) -> Guard:
    """Admin routes: absent (404) when `key` is None; a missing key is 401, a wrong one 403."""

    async def guard(credentials: Credentials) -> None:
        if key is None:
            raise ApiError("not_found", "admin routes are off; start the server with an admin key to use them")
        if credentials is None:
            raise ApiError("unauthorized", "this route needs the admin key: send 'Authorization: Bearer <admin key>'")
        if not _same(credentials.credentials, key):
            raise ApiError("forbidden", "this key may not change the model; use the admin key")

    return guard


def _same(given: str, expected: str) -> bool:
    # Constant time, so the key cannot be guessed byte by byte from response times.
    return hmac.compare_digest(given.encode(), expected.encode())


def has_key(authorization: str | None, key: str | None) -> bool:
    """Whether an Authorization header carries `key` (always, when no key is set): for routes open to all
    that show more to clients with the key."""
    if key is None:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and _same(given.strip(), key)
