"""One local Ray instance for every Ray test (it takes ~20 s to start), serving the scorer with 2 replicas.

The replicas reserve half a CPU each, so both, the ingress, the registry and Ray's proxy fit in
`num_cpus=2`. The application runs with an API key and an admin key, and a model root holding two
tiny models: `tiny-a` (the shared tiny llama, served first) and `tiny-b` (reseeded).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from ccapo_server.ray_serve import APP_NAME, build_application
from ccapo_server.settings import ServerSettings
from live_server import free_port
from ray import serve
from ray_app import ADMIN_KEY, API_KEY, REPLICAS, RayApp


@pytest.fixture(scope="session")
def ray_app(model_root: Path) -> Iterator[RayApp]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        settings = ServerSettings(
            model=str(model_root / "tiny-a"),
            api_key=API_KEY,
            admin_key=ADMIN_KEY,
            model_roots=[model_root],
            max_traces_per_request=8,
        )
        handle = serve.run(build_application(settings, replicas=REPLICAS, replica_cpus=0.5), name=APP_NAME)
        app = RayApp(
            f"http://127.0.0.1:{port}", handle, serve.get_deployment_handle("ModelRegistry", APP_NAME), model_root
        )
        app.wait_ready()
        yield app
    finally:
        _stop_ray()


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After the last Ray test, not at the end of the session: the rest of the suite gets the CPUs back."""
    if nextitem is None or Path(__file__).parent not in Path(nextitem.path).parents:
        _stop_ray()


def _stop_ray() -> None:
    if ray.is_initialized():
        serve.shutdown()
        ray.shutdown()
