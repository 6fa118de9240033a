"""`ccapo serve` (also `python -m ccapo_server`): run the scoring server under uvicorn."""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import signal
import sys
from types import FrameType
from typing import Any

import uvicorn
from pydantic import ValidationError
from transformers.utils import logging as transformers_logging

from ccapo_server.app import create_app
from ccapo_server.ray_names import APP_NAME
from ccapo_server.runtime import Runtime
from ccapo_server.schemas import TEXT_TRACE
from ccapo_server.settings import ServerSettings

logger = logging.getLogger("ccapo_server")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ccapo serve",  # also what `python -m ccapo_server` runs
        description="The ccapo scoring server. Every flag has a CCAPO_* environment variable; flags win.",
    )
    parser.add_argument("--model", help="hub id, local directory or .gguf file (default: bundled SmolLM2-135M)")
    parser.add_argument("--device", help="torch device (default: CUDA when present, else CPU)")
    parser.add_argument("--dtype", help="torch dtype, e.g. float32 or bfloat16 (default: fp32 on CPU)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8000)")
    parser.add_argument("--max-wait-ms", type=float, help="how long a trace waits for others to share its batch")
    parser.add_argument("--server-batch-tokens", type=int, help="feed tokens one server batch may hold (default 16384)")
    parser.add_argument(
        "--engine-batch-tokens", type=int, help="padded tokens per engine forward pass (default: the Scorer's)"
    )
    parser.add_argument("--max-batch-tokens", type=int, help="deprecated name of --server-batch-tokens")
    parser.add_argument("--api-key", help="bearer key for the scoring routes (prefer CCAPO_API_KEY: flags show in ps)")
    parser.add_argument("--admin-key", help="bearer key for POST /v1/model (prefer CCAPO_ADMIN_KEY)")
    parser.add_argument(
        "--model-root",
        dest="model_roots",
        action="append",
        metavar="DIR",
        help="directory POST /v1/model may load models from (repeatable)",
    )
    ray = parser.add_argument_group("Ray Serve (needs the ray extra: pip install '.[ray]' from a clone)")
    ray.add_argument("--ray", action="store_true", help="serve as a Ray Serve application (RAY_ADDRESS: a cluster)")
    ray.add_argument("--replicas", type=int, help="model replicas, each with its own model and batcher (default 1)")
    ray.add_argument("--replica-cpus", type=float, help="CPUs each replica reserves (default 1)")
    ray.add_argument("--replica-gpus", type=float, help="GPUs each replica reserves (default 0)")
    ray.add_argument(
        "--replicas-per-node",
        type=int,
        help="at most this many replicas on one node, a rule Ray keeps (default: no limit, Ray spreads them as it can)",
    )
    ray.add_argument(
        "--detach",
        action="store_true",
        default=None,
        help="deploy into the running cluster (RAY_ADDRESS, else auto), return once ready, leave it running",
    )
    ray.add_argument(
        "--app-name",
        help=f"the application's name, how trainers find it (ray_app; default {APP_NAME!r}, the only one on HTTP /)",
    )
    return parser


_RAY_FLAGS = ("ray", "replicas", "replica_cpus", "replica_gpus", "replicas_per_node", "detach", "app_name")


def _ray_options(argv: list[str] | None) -> dict[str, Any] | None:
    """The Ray flags given, or None to serve without Ray; exits 2 on Ray flags without --ray."""
    parser = _parser()
    args = vars(parser.parse_args(argv))
    given = {name: args[name] for name in _RAY_FLAGS[1:] if args[name] is not None}
    if not args["ray"]:
        if given:
            parser.error(f"--{next(iter(given)).replace('_', '-')} needs --ray")
        return None
    if given.get("replicas", 1) < 1:
        parser.error("--replicas must be 1 or more")
    if given.get("replicas_per_node", 1) < 1:
        parser.error("--replicas-per-node must be 1 or more")
    defaults = {"replicas": 1, "replica_cpus": 1.0, "replica_gpus": 0.0, "replicas_per_node": None}
    return {**defaults, "detach": False, "app_name": APP_NAME, **given}


def curl_example(settings: ServerSettings) -> str:
    """A ready-to-paste request for the running server."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    host = f"[{host}]" if ":" in host else host
    command = [
        "curl",
        "-s",
        f"http://{host}:{settings.port}/v1/importance",
        "-H",
        "Content-Type: application/json",
    ]
    auth = ' -H "Authorization: Bearer $CCAPO_API_KEY"' if settings.api_key else ""
    body = json.dumps({"traces": [TEXT_TRACE]})
    return f"{shlex.join(command)}{auth} -d {shlex.quote(body)}"


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    # uvicorn drains on SIGTERM, then raises the signal again for its previous handler: this one,
    # so that a drained shutdown exits 0 rather than dying of the signal.
    raise SystemExit(0)


def settings_from_args(argv: list[str] | None = None) -> ServerSettings:
    """CCAPO_* environment settings, overridden by the flags given; exits 2 on a bad value."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        given = {name: value for name, value in vars(args).items() if value is not None and name not in _RAY_FLAGS}
        return ServerSettings(**given)
    except ValidationError as err:
        parser.error(str(err))


def _serve_on_ray(settings: ServerSettings, options: dict[str, Any]) -> int:
    try:
        from ccapo_server.ray_serve import run
    except ImportError as err:
        logger.error("ccapo serve --ray needs the ray extra: pip install '.[ray]' from a clone (%s)", err)
        return 2
    try:
        run(
            settings,
            int(options["replicas"]),
            float(options["replica_cpus"]),
            float(options["replica_gpus"]),
            replicas_per_node=options["replicas_per_node"],
            app_name=str(options["app_name"]),
            detach=bool(options["detach"]),
        )
    except (ConnectionError, TimeoutError) as err:
        logger.error("%s", err)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    settings = settings_from_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    transformers_logging.disable_progress_bar()  # a weight-loading bar in a server log is noise
    logger.info("try it once ready:\n  %s", curl_example(settings))
    if (ray_options := _ray_options(argv)) is not None:
        return _serve_on_ray(settings, ray_options)
    signal.signal(signal.SIGTERM, _exit_cleanly)
    app = create_app(settings)
    # The app answers what is left with 503 when its grace period ends; uvicorn's own limit comes
    # after that, so that no connection is cut with a plain-text 500.
    grace = settings.graceful_timeout_s + settings.shutdown_timeout_s
    config = uvicorn.Config(app, host=settings.host, port=settings.port, timeout_graceful_shutdown=math.ceil(grace))
    _Server(config, app.state.runtime).run()
    return 0


class _Server(uvicorn.Server):
    """uvicorn, telling the app the moment a signal asks it to stop: admission closes at once,
    not only after uvicorn has waited for every connection."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime):
        super().__init__(config)
        self._runtime = runtime

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._runtime.shut_down_soon()
        super().handle_exit(sig, frame)


if __name__ == "__main__":
    sys.exit(main())
