"""Model swaps as resources: `POST /v1/model` with `Prefer: respond-async` answers 202 at once, and the
swap's state is polled at `GET /v1/model/swaps/{id}` (pending, live or failed).

A policy load can outlast any client's read timeout (a 7B checkpoint on a busy node); a client that
polls never holds a connection open across it, and a trainer treats "still pending" as a lag to
count, not a failure to raise.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import OrderedDict
from collections.abc import Awaitable
from typing import Literal

from pydantic import BaseModel, Field

from ccapo_server.errors import ApiError

logger = logging.getLogger(__name__)

SwapState = Literal["pending", "live", "failed"]
SWAPS_PATH = "/v1/model/swaps/"  # + a swap's id: where it is polled
_KEPT_SWAPS = 32  # finished swaps a poller may still ask about; older ones answer 404


class SwapError(BaseModel):
    type: str
    message: str


class SwapStatus(BaseModel):
    """One model swap: what was asked for, where it stands, and the version it serves once live."""

    id: str
    model: str = Field(description="the model's public name, as GET /v1/model reports it once live")
    status: SwapState = Field(description="pending: loading; live: in service; failed: the old model still serves")
    version: str | None = Field(None, description="the model version it serves as, once live")
    error: SwapError | None = Field(None, description="why it failed, once failed")


class Swaps:
    """The swaps this server ran, newest last; `start` runs one in the background and answers at once."""

    def __init__(self) -> None:
        self._swaps: OrderedDict[str, SwapStatus] = OrderedDict()
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, name: str, swap: Awaitable[int]) -> SwapStatus:
        """Record a pending swap of `name` and run `swap` (which returns the version) in the background."""
        status = SwapStatus(id=f"swap-{next(self._ids)}", model=name, status="pending")
        self._swaps[status.id] = status
        while len(self._swaps) > _KEPT_SWAPS:
            self._swaps.popitem(last=False)
        task = asyncio.get_running_loop().create_task(self._follow(status, swap), name=f"ccapo-{status.id}")
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)
        return status

    def get(self, swap_id: str) -> SwapStatus:
        try:
            return self._swaps[swap_id]
        except KeyError:
            raise ApiError(
                "not_found", f"no swap {swap_id!r} on this server (it keeps the last {_KEPT_SWAPS})"
            ) from None

    async def _follow(self, status: SwapStatus, swap: Awaitable[int]) -> None:
        try:
            version = await swap
        except ApiError as err:
            status.status, status.error = "failed", SwapError(type=err.type, message=err.message)
            return
        except Exception as err:
            logger.exception("model swap %s failed", status.id)
            status.status, status.error = "failed", SwapError(type="internal", message=str(err))
            return
        status.status, status.version = "live", str(version)


def prefers_async(prefer: str | None) -> bool:
    """Whether a `Prefer` header (RFC 7240: preferences separated by commas, parameters by ';') asks for
    `respond-async`."""
    preferences = (part.split(";")[0].split("=")[0].strip().lower() for part in (prefer or "").split(","))
    return "respond-async" in preferences
