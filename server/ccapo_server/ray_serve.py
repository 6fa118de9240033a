"""The scoring server as a Ray Serve application: an ingress, N model replicas and a model registry.

    ccapo serve --ray --replicas 2 --model DIR            # local Ray, or the cluster in RAY_ADDRESS
    serve run ccapo_server.ray_serve:build_app replicas=2 model=DIR

Each replica runs the real `create_app()` app with its own model and dynamic batcher; Ray's
router spreads requests over them (see ray_ingress for what the ingress adds).
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from ray import serve
from ray.serve import Application

from ccapo_server.ray_ingress import ScorerIngress
from ccapo_server.ray_registry import ModelRegistry
from ccapo_server.ray_replica import ScorerReplica
from ccapo_server.settings import ServerSettings

logger = logging.getLogger("ccapo_server.ray")

APP_NAME = "ccapo"
# The ingress and the registry only move bytes: they must not hold back a CPU a replica could use.
_LIGHT = {"num_cpus": 0}


def build_application(
    settings: ServerSettings, replicas: int = 1, replica_cpus: float = 1.0, replica_gpus: float = 0.0
) -> Application:
    """The application for `serve.run`: `replicas` model replicas, each reserving the CPUs/GPUs given."""
    if replicas < 1:
        raise ValueError(f"replicas is {replicas}; give 1 or more")
    registry = serve.deployment(
        ModelRegistry,
        name="ModelRegistry",
        num_replicas=1,
        ray_actor_options=_LIGHT,
        logging_config={"enable_access_log": False},  # a heartbeat per replica every HEARTBEAT_S
    )
    model = serve.deployment(
        ScorerReplica,
        name="ScorerReplica",
        num_replicas=replicas,
        ray_actor_options={"num_cpus": replica_cpus, "num_gpus": replica_gpus},
        # Requests wait in each replica's own queue, where the batcher sees them and answers 429 when full.
        max_ongoing_requests=max(64, settings.max_queue_traces),
        graceful_shutdown_timeout_s=settings.graceful_timeout_s,
    )
    ingress = serve.deployment(ScorerIngress, name="ScorerIngress", ray_actor_options=_LIGHT, max_ongoing_requests=4096)
    registry_app = registry.bind(settings.model)
    return ingress.bind(model.bind(settings, registry_app), registry_app, settings, replicas)


def build_app(args: dict[str, Any]) -> Application:
    """Builder for `serve run ccapo_server.ray_serve:build_app key=value ...` and Serve config files.

    `replicas`, `replica_cpus` and `replica_gpus` shape the deployment; every other key is a
    `ServerSettings` field (CCAPO_* environment variables fill the rest).
    """
    args = dict(args)
    shape = {key: args.pop(key) for key in ("replicas", "replica_cpus", "replica_gpus") if key in args}
    return build_application(
        ServerSettings(**args),
        replicas=int(shape.get("replicas", 1)),
        replica_cpus=float(shape.get("replica_cpus", 1.0)),
        replica_gpus=float(shape.get("replica_gpus", 0.0)),
    )


def run(settings: ServerSettings, replicas: int, replica_cpus: float, replica_gpus: float) -> None:
    """Serve on `settings.host:port` until SIGINT/SIGTERM, then shut the application down (draining replicas)."""
    import ray

    ray.init(include_dashboard=False, ignore_reinit_error=True)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build_application(settings, replicas, replica_cpus, replica_gpus), name=APP_NAME)
    logger.info("ready: %d replicas behind http://%s:%d", replicas, settings.host, settings.port)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    logger.info("shutting down the Ray Serve application")
    serve.delete(APP_NAME)
    serve.shutdown()
