"""The app's moving parts: loading models off the event loop, the scheduler once one is in service, readiness."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ccapo import Scorer
from ccapo.examples import load_examples
from ccapo_server.errors import ApiError
from ccapo_server.metrics import Metrics
from ccapo_server.model_access import startup_name
from ccapo_server.scheduler import Scheduler
from ccapo_server.settings import ServerSettings
from ccapo_server.swaps import Swaps, SwapStatus

logger = logging.getLogger(__name__)

ScorerFactory = Callable[[str | None], Scorer]


def default_scorer_factory(settings: ServerSettings) -> ScorerFactory:
    def load(model: str | None) -> Scorer:
        return Scorer.from_pretrained(
            model, settings.device, settings.dtype, max_batch_tokens=settings.engine_batch_tokens
        )

    return load


class Runtime:
    """Loads the first model in the background (so /healthz answers at once), swaps models, shuts down."""

    def __init__(self, settings: ServerSettings, metrics: Metrics, scorer_factory: ScorerFactory):
        self.settings = settings
        self.metrics = metrics
        self.load_error: str | None = None
        self._factory = scorer_factory
        self._scheduler: Scheduler | None = None
        self._startup: asyncio.Task[None] | None = None
        self._swapping = False
        self._stopping = False
        self.swaps = Swaps()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def scheduler(self) -> Scheduler:
        """The scheduler in service; not_ready (503) while the first model loads or after it failed to."""
        if self._scheduler is None:
            if self._stopping:
                raise ApiError("shutting_down", "the server is shutting down", retry_after=5)
            message = self.load_error or "the model is loading; retry shortly"
            raise ApiError("not_ready", message, retry_after=5)
        return self._scheduler

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._startup = self._loop.create_task(self._load_first(), name="ccapo-load-model")

    def shut_down_soon(self) -> None:
        """`begin_shutdown` from a signal handler or another thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.begin_shutdown)

    def begin_shutdown(self) -> None:
        """SIGTERM: stop admitting at once, while the server still drains its connections."""
        self._stopping = True
        if self._scheduler is not None:
            self._scheduler.begin_shutdown()

    async def stop(self) -> None:
        self._stopping = True
        if self._startup is not None and not self._startup.done():
            self._startup.cancel()  # its loading thread cannot be interrupted; it ends on its own
        if self._scheduler is not None:
            await self._scheduler.stop()

    async def swap(self, source: str, name: str | None = None) -> int:
        """Load `source` in a background thread while serving continues, then put it in service as `name`
        (default: the loaded scorer's model id); returns its version."""
        scheduler = self._claim_swap()
        try:
            return await self._swap(scheduler, source, name)
        finally:
            self._swapping = False

    def swap_in_background(self, source: str, name: str) -> SwapStatus:
        """`swap`, answering at once with the pending swap (poll it in `swaps`); refusals still raise here."""
        scheduler = self._claim_swap()

        async def run() -> int:
            try:
                return await self._swap(scheduler, source, name)
            finally:
                self._swapping = False

        return self.swaps.start(name, run())

    def _claim_swap(self) -> Scheduler:
        """The scheduler to swap on, reserved for one swap at a time (conflict, 409, while another runs)."""
        scheduler = self.scheduler
        if self._swapping:
            raise ApiError("conflict", "a model is already being loaded; retry when it is done")
        self._swapping = True
        return scheduler

    async def _swap(self, scheduler: Scheduler, source: str, name: str | None) -> int:
        try:
            scorer = await asyncio.to_thread(self._load, source)
        except Exception as err:  # a bad checkpoint is the caller's to fix, not a server fault
            logger.warning("could not load model %s: %s", source, err)
            shown = name or source
            raise ApiError(
                "invalid_request", f"model: could not load {shown!r}: {str(err).replace(source, shown)}"
            ) from err
        return await scheduler.swap(scorer, name or scorer.model_id)

    async def _load_first(self) -> None:
        source = self.settings.model
        try:
            scorer = await asyncio.to_thread(self._load, source)
        except Exception as err:
            logger.exception("could not load model %s", source or "(default)")
            self.load_error = f"the model failed to load: {err}"
            return
        if scorer.model_id == source:  # named by its path on this machine, which clients would see
            scorer.model_id = startup_name(source, self.settings) or source
        self._scheduler = Scheduler(scorer, scorer.model_id, self.settings, self.metrics)
        self._scheduler.start()
        logger.info("ready: %s on %s (%s)", scorer.model_id, scorer.model.device, scorer.model.dtype)

    def _load(self, source: str | None) -> Scorer:
        """In a worker thread: load, then score one bundled example so the first request pays no warm-up."""
        logger.info("loading model %s", source or "(default)")
        scorer = self._factory(source)
        if self.settings.warmup:
            scorer.score(load_examples()[:1])
        return scorer
