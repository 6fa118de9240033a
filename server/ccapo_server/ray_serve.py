"""The scoring server as a Ray Serve application: an ingress, N model replicas and a model registry.

    ccapo serve --ray --replicas 2 --model DIR            # local Ray, or the cluster in RAY_ADDRESS
    RAY_ADDRESS=auto ccapo serve --ray --detach --replica-gpus 1 --model DIR   # into a running cluster
    serve run ccapo_server.ray_serve:build_app replicas=2 model=DIR

Each replica runs the real `create_app()` app with its own model and dynamic batcher; Ray's
router spreads requests over them (see ray_ingress for what the ingress adds).

In a trainer's cluster (verl, OpenRLHF) the cluster's workers run the trainer's Python, whose
transformers ccapo cannot share: `run` starts the application's actors with the interpreter that
runs `ccapo serve` (Ray's `py_executable`), so that environment must exist at the same path on
every node that may hold a replica, with the cluster's Python and Ray versions. `--detach`
returns once every replica serves the model and leaves the application in the cluster under its
name, where a trainer finds it (`serve.get_app_handle(name)`, `provider: ray`); `serve.delete(name)`
ends it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from ray import serve
from ray.serve import Application

from ccapo_server.ray_ingress import ScorerIngress
from ccapo_server.ray_names import APP_NAME
from ccapo_server.ray_registry import ModelRegistry
from ccapo_server.ray_replica import ScorerReplica
from ccapo_server.settings import ServerSettings

logger = logging.getLogger("ccapo_server.ray")

READY_TIMEOUT_S = 1800.0  # a detached start waits this long for every replica to load its model


def build_application(
    settings: ServerSettings,
    replicas: int = 1,
    replica_cpus: float = 1.0,
    replica_gpus: float = 0.0,
    python: str | None = None,
    replicas_per_node: int | None = None,
) -> Application:
    """The application for `serve.run`: `replicas` model replicas, each reserving the CPUs/GPUs given.

    `python`: the interpreter every actor of the application runs (Ray's `py_executable`); None
    leaves it to Ray (the cluster's workers' interpreter). `replicas_per_node`: at most that many
    replicas on one node, a constraint Ray's scheduler keeps (Serve's own placement only prefers to
    spread): in a trainer's cluster, `replicas = nodes * k` with `replicas_per_node = k` leaves every
    node the same GPUs for the trainer, whose per-node placement groups (verl's STRICT_PACK ones)
    then fit, where replicas packed on one node would leave it waiting. A replica that cannot be
    placed waits for a node with room.
    """
    if replicas < 1:
        raise ValueError(f"replicas is {replicas}; give 1 or more")
    if replicas_per_node is not None and replicas_per_node < 1:
        raise ValueError(f"replicas_per_node is {replicas_per_node}; give 1 or more, or None for no limit")
    env = {"runtime_env": {"py_executable": python}} if python else {}
    # The ingress and the registry only move bytes: they must not hold back a CPU a replica could use.
    light = {"num_cpus": 0, **env}
    registry = serve.deployment(
        ModelRegistry,
        name="ModelRegistry",
        num_replicas=1,
        ray_actor_options=light,
        logging_config={"enable_access_log": False},  # a heartbeat per replica every HEARTBEAT_S
    )
    model = serve.deployment(
        ScorerReplica,
        name="ScorerReplica",
        num_replicas=replicas,
        ray_actor_options={"num_cpus": replica_cpus, "num_gpus": replica_gpus, **env},
        **({"max_replicas_per_node": replicas_per_node} if replicas_per_node else {}),
        # Requests wait in each replica's own queue, where the batcher sees them and answers 429 when full.
        max_ongoing_requests=max(64, settings.max_queue_traces),
        graceful_shutdown_timeout_s=settings.graceful_timeout_s,
    )
    ingress = serve.deployment(ScorerIngress, name="ScorerIngress", ray_actor_options=light, max_ongoing_requests=4096)
    registry_app = registry.bind(settings.model)
    return ingress.bind(model.bind(settings, registry_app), registry_app, settings, replicas)


def build_app(args: dict[str, Any]) -> Application:
    """Builder for `serve run ccapo_server.ray_serve:build_app key=value ...` and Serve config files.

    `replicas`, `replica_cpus`, `replica_gpus` and `replicas_per_node` shape the deployment; every
    other key is a `ServerSettings` field (CCAPO_* environment variables fill the rest).
    """
    args = dict(args)
    keys = ("replicas", "replica_cpus", "replica_gpus", "replicas_per_node")
    shape = {key: args.pop(key) for key in keys if key in args}
    per_node = shape.get("replicas_per_node")
    return build_application(
        ServerSettings(**args),
        replicas=int(shape.get("replicas", 1)),
        replica_cpus=float(shape.get("replica_cpus", 1.0)),
        replica_gpus=float(shape.get("replica_gpus", 0.0)),
        replicas_per_node=int(per_node) if per_node is not None else None,
    )


def run(
    settings: ServerSettings,
    replicas: int,
    replica_cpus: float,
    replica_gpus: float,
    *,
    replicas_per_node: int | None = None,
    app_name: str = APP_NAME,
    detach: bool = False,
) -> None:
    """Deploy the application as `app_name`, its actors on this interpreter; serve on `settings.host:port`.

    Attached, it serves until SIGINT/SIGTERM, then deletes the application (draining replicas).
    Detached, it joins the running cluster (RAY_ADDRESS, else "auto"), returns once the
    application is ready and leaves it there.
    """
    import ray

    address = os.environ.get("RAY_ADDRESS", "auto") if detach else None
    try:
        ray.init(address=address, include_dashboard=False, ignore_reinit_error=True)
    except ConnectionError as err:
        raise ConnectionError(
            f"--detach deploys into a running Ray cluster and found none at {address!r} ({err}): "
            "start it first (ray start --head), or set RAY_ADDRESS to its address"
        ) from err
    serve.start(http_options={"host": settings.host, "port": settings.port})
    app = build_application(
        settings, replicas, replica_cpus, replica_gpus, python=sys.executable, replicas_per_node=replicas_per_node
    )
    handle = serve.run(app, name=app_name, route_prefix=None if app_name != APP_NAME else "/")
    if detach:
        wait_ready(handle, READY_TIMEOUT_S)
        logger.info("ready: application %r with %d replicas; serve.delete(%r) ends it", app_name, replicas, app_name)
        return
    logger.info("ready: %d replicas behind http://%s:%d", replicas, settings.host, settings.port)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    logger.info("shutting down the Ray Serve application")
    serve.delete(app_name)
    serve.shutdown()


def wait_ready(handle: Any, timeout: float) -> None:
    """Until the application's /readyz answers 200 (every replica serves the model); TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        answer = handle.call_route.remote("GET", "/readyz", {}, b"").result(timeout_s=60)
        if answer["status"] == 200:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the replicas were not ready within {timeout:g} s: {answer['body']!r}")
        time.sleep(1.0)
