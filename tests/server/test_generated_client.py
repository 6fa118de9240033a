"""A client generated from the server's own /openapi.json by openapi-python-client, used as its users would.

The generator runs in its own environment (`make openapi-client-env`, built here when missing): its
pins clash with the main one's (it wants older httpx and typer than transformers allows). The client
it writes needs only httpx, attrs and python-dateutil, and runs in this interpreter against the tiny
server. Cost: generating takes about 2 s, the calls well under a second; building the generator's
environment, once per checkout, about 40 s.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from ccapo_server.app import create_app
from ccapo_server.settings import ServerSettings

ROOT = Path(__file__).resolve().parents[2]
# Keep in step with the Makefile's openapi-client-env target.
GENERATOR_VENV = ROOT / ".venv-openapi"
GENERATOR = "openapi-python-client==0.29.1"
PACKAGE = "ccapo_api"
# Every route's operation id, the name of its method in a generated client, by tag (its module there).
OPERATIONS = {
    "scoring": {"score", "list_examples"},
    "model": {"get_model", "load_model", "get_swap"},
    "operations": {"get_health", "get_readiness", "get_metrics"},
}


def _generator() -> Path:
    command = GENERATOR_VENV / "bin" / "openapi-python-client"
    if not command.exists():  # what `make openapi-client-env` does
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(GENERATOR_VENV)], check=True)
        pip = [str(GENERATOR_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, GENERATOR], check=True, timeout=600)
    return command


@pytest.fixture(scope="module")
def generated(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The `ccapo_api` package openapi-python-client writes from the running server's /openapi.json."""
    folder = tmp_path_factory.mktemp("generated-client")
    spec = folder / "openapi.json"
    spec.write_bytes(httpx.get(f"{server_url}/openapi.json").raise_for_status().content)
    config = folder / "generator.yaml"
    config.write_text("post_hooks: []\n")  # no formatter run: the code is only imported
    run = subprocess.run(
        [str(_generator()), "generate", "--path", str(spec), "--meta", "none", "--config", str(config),
         "--output-path", str(folder / PACKAGE)],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0 and "Error" not in run.stdout, run.stdout + run.stderr
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def test_every_route_has_an_operation_id_a_tag_and_a_summary():
    # With an admin key, so the admin routes are in the document too; no model is loaded for this.
    spec = create_app(ServerSettings(admin_key="admin")).openapi()
    operations = [op for path in spec["paths"].values() for op in path.values()]
    by_tag: dict[str, set[str]] = {}
    for op in operations:
        assert op.get("summary") and len(op["tags"]) == 1, op
        by_tag.setdefault(op["tags"][0], set()).add(op["operationId"])
    assert by_tag == OPERATIONS
    assert [tag["name"] for tag in spec["tags"]] == list(OPERATIONS)
    statuses = {int(status) for op in operations for status in op["responses"]}
    assert statuses <= {200, 202, 400, 401, 403, 404, 409, 413, 422, 429, 500, 503, 504}  # no 499


def test_a_generated_client_has_the_operation_ids_as_methods_and_scores_a_trace(
    generated: ModuleType, server_url: str, text_trace: dict
):
    for tag, names in OPERATIONS.items():
        module = importlib.import_module(f"{PACKAGE}.api.{tag}")
        found = {path.stem for path in Path(module.__file__).parent.glob("*.py")} - {"__init__"}
        # The admin routes are left out of the document of a server without an admin key, like this one.
        assert found == names - {"load_model", "get_swap"}, tag
    score = importlib.import_module(f"{PACKAGE}.api.scoring.score")
    get_model = importlib.import_module(f"{PACKAGE}.api.model.get_model")
    get_health = importlib.import_module(f"{PACKAGE}.api.operations.get_health")
    models = importlib.import_module(f"{PACKAGE}.models")

    with generated.Client(base_url=server_url, raise_on_unexpected_status=True) as client:
        assert get_health.sync(client=client).status == "alive"
        info = get_model.sync(client=client)
        assert info.limits.max_tokens_per_trace >= 16384 and info.context_length > 0
        body = models.ImportanceRequest.from_dict({"traces": [text_trace]})
        response = score.sync_detailed(client=client, body=body, x_request_timeout=30)
        assert response.status_code == 200, response.content
        (result,) = response.parsed.results
        assert result.status == "ok" and response.parsed.model.id == info.id
        assert len(result.token_weights) == len(result.tokens) and result.spans
        # The default weighting keeps the mean weight at 1 (see tests/integrations/test_default_weights.py).
        assert sum(result.token_weights) / len(result.token_weights) == pytest.approx(1.0)
        bad = score.sync_detailed(client=client, body=models.ImportanceRequest.from_dict({"traces": []}))
        assert bad.status_code == 422 and isinstance(bad.parsed, models.ErrorBody)
