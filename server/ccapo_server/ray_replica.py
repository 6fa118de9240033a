"""One Ray Serve model replica: the real `create_app()` app with its own model and dynamic batcher.

It starts on the model the registry holds (so a replica that Ray starts after a swap serves the
swapped-in model), reports to the registry every heartbeat, and follows it when the ingress
commits a swap. Its model version is the registry's, so all replicas report the same version
for the same model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from ray import serve

from ccapo import Scorer
from ccapo_server.app import create_app
from ccapo_server.errors import ApiError
from ccapo_server.model_access import resolve_model_source
from ccapo_server.ray_asgi import Lifespan, WireRequest, WireResponse, call_app
from ccapo_server.ray_registry import HEARTBEAT_S
from ccapo_server.runtime import Runtime, ScorerFactory, default_scorer_factory
from ccapo_server.settings import ServerSettings

logger = logging.getLogger("ccapo_server.ray")

_LOAD_POLL_S = 0.1
_RETRY_FAILED_LOAD_S = 10.0  # a model this replica could not load is tried again after this long


class ScorerReplica:
    async def __init__(self, settings: ServerSettings, registry: Any):
        self._registry = registry
        self._settings = settings
        self.name = serve.get_replica_context().replica_id.unique_id
        source, name, version = await registry.desired.remote()
        self._source = source
        self._app = create_app(settings.model_copy(update={"model": source}), _named(settings, name))
        self._runtime: Runtime = self._app.state.runtime
        self._lifespan = Lifespan(self._app)
        await self._lifespan.start()
        await self._loaded()  # Ray routes nothing here until the model is in service
        _align_version(self._runtime, version)
        self._error: str | None = None
        self._retry_at = 0.0
        self._following: asyncio.Task[None] | None = None
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat(), name="ccapo-ray-heartbeat")
        logger.info("replica %s serves %s as version %d", self.name, source or "(default)", version)

    async def handle(self, request: WireRequest) -> WireResponse:
        """Any route of the app."""
        return await call_app(self._app, request)

    async def swap(self, request: WireRequest) -> tuple[WireResponse, str | None, str, int]:
        """POST /v1/model through the app (auth, model roots, loading, errors); on success also what
        it loaded, the name and the version it serves it as, for the registry to commit."""
        response = await call_app(self._app, request)
        scheduler = self._runtime.scheduler
        if response.status == 200:
            self._source = resolve_model_source(json.loads(request.body)["model"], self._settings)
            self._error = None
        return response, self._source, scheduler.model_id, scheduler.version

    def check_health(self) -> None:
        # Serve replaces a replica whose check fails: one that lost its heartbeat cannot follow swaps.
        if self._heartbeat.done():
            raise RuntimeError("the registry heartbeat stopped")

    async def __del__(self) -> None:
        self._heartbeat.cancel()
        await self._lifespan.stop()  # drains: every queued request is answered

    async def _loaded(self) -> None:
        while True:
            try:
                self._runtime.scheduler  # noqa: B018 - raises not_ready until the model is in service
                return
            except ApiError:
                if self._runtime.load_error:
                    raise RuntimeError(self._runtime.load_error) from None
            await asyncio.sleep(_LOAD_POLL_S)

    async def _beat(self) -> None:
        while True:
            try:
                scheduler = self._runtime.scheduler
                source, name, version = await self._registry.report.remote(
                    self.name,
                    scheduler.version,
                    scheduler.model_id,
                    self._source,
                    self._error,
                    self._runtime.metrics.render().decode(),
                )
                idle = self._following is None or self._following.done()
                if version > scheduler.version and idle and time.monotonic() >= self._retry_at:
                    self._following = asyncio.get_running_loop().create_task(self._follow(source, name, version))
            except Exception:  # a registry restart must not end the heartbeat
                logger.warning("replica %s could not report to the registry", self.name, exc_info=True)
            await asyncio.sleep(HEARTBEAT_S)

    async def _follow(self, source: str | None, name: str | None, version: int) -> None:
        """Swap to the model another replica put in service, keeping this one serving meanwhile."""
        try:
            await self._runtime.swap(source or "default", name)
        except ApiError as err:
            if err.type != "conflict":  # conflict: a swap through this replica is under way; retry next beat
                self._error = err.message
                self._retry_at = time.monotonic() + _RETRY_FAILED_LOAD_S
                logger.warning("replica %s could not load %s: %s", self.name, source, err.message)
            return
        _align_version(self._runtime, version)
        self._source, self._error = source, None
        logger.info("replica %s follows the swap to %s, version %d", self.name, source, version)


def _named(settings: ServerSettings, name: str | None) -> ScorerFactory:
    """The server's model loader, serving the first model as `name` (the registry's public name of a
    swapped-in model, rather than its path on this machine)."""
    load = default_scorer_factory(settings)

    def named(source: str | None) -> Scorer:
        scorer = load(source)
        if name is not None:
            scorer.model_id = name
        return scorer

    return named


def _align_version(runtime: Runtime, version: int) -> None:
    """Number this replica's model as the registry does; its own counter counts only its own swaps."""
    runtime.scheduler.version = version
    runtime.metrics.model_version.set(version)
