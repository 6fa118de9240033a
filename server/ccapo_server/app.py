"""`create_app`: the scoring server as a FastAPI app, with no module-level state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

import ccapo
from ccapo_server.errors import install_error_handlers
from ccapo_server.metrics import Metrics
from ccapo_server.middleware import BodyLimit, RequestMetrics
from ccapo_server.page import add_page_routes
from ccapo_server.routes import add_routes
from ccapo_server.runtime import Runtime, ScorerFactory, default_scorer_factory
from ccapo_server.schemas import TAGS, ErrorBody
from ccapo_server.settings import ServerSettings

DESCRIPTION = """\
Counterfactual span importance as a service: send reasoning traces, get back how much each
span's removal lowers the log-probability of the answer, and per-token weights for the
policy-gradient loss. Results are exactly `ccapo.TraceImportance.to_dict()`.

Requests from many clients are batched together; errors are `{"error": {"type", "message"}}`.
"""


def create_app(settings: ServerSettings | None = None, scorer_factory: ScorerFactory | None = None) -> FastAPI:
    """The app; its model loads in the background at startup, so /healthz answers at once.

    `scorer_factory(model)` loads a `ccapo.Scorer` for a model spec (None: the bundled default).
    """
    settings = settings or ServerSettings()
    metrics = Metrics()
    runtime = Runtime(settings, metrics, scorer_factory or default_scorer_factory(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.start()
        yield
        await runtime.stop()

    # FastAPIOffline: FastAPI whose /docs loads Swagger UI from the server itself (offline clusters).
    # No /redoc: ReDoc's bundle still fetches its logo from a CDN.
    app = FastAPIOffline(
        redoc_url=None,
        title="ccapo scoring server",
        version=ccapo.__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        # The body limit guards every route, so every route documents its 413.
        responses={413: {"model": ErrorBody}},
    )
    app.state.runtime = runtime  # for hosts that drive the app in-process (the Ray Serve replicas)
    install_error_handlers(app, metrics.count_error)
    add_routes(app, runtime)
    add_page_routes(app, api_key_required=settings.api_key is not None)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, count_error=metrics.count_error)
    # Added last, so outermost: it sees the status of every answer, the body limit's 413 included.
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app
