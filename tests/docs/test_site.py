"""The documentation site builds with `mkdocs build --strict` (a broken link, an anchor that is not
there, a page missing from the nav or a docstring the API reference cannot read fails it), documents
every public name, and loads nothing from outside itself, also when a browser opens it."""

from __future__ import annotations

import functools
import http.server
import importlib
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from page import conftest as page_fixtures

ROOT = Path(__file__).resolve().parents[2]
browser = page_fixtures.browser  # the page tests' headless system Chromium, one per module
artifacts = page_fixtures.artifacts  # where screenshots go (git-ignored)
PUBLIC_PACKAGES = ("ccapo", "ccapo_client", "ccapo_adapters", "ccapo_trainer")
# The modules a training script imports beside its package's own names, and the reference page of each:
# every public name they define must be on it (read by griffe, statically: verl and OpenRLHF are not here).
PUBLIC_MODULES = {
    "ccapo_adapters": (
        "ccapo_adapters.trl",
        "ccapo_adapters.verl_runner",
        "ccapo_adapters.verl_trainer",
        "ccapo_adapters.verl",
        "ccapo_adapters.openrlhf_trainer",
        "ccapo_adapters.openrlhf",
        "ccapo_adapters.openrlhf_hook",
        "ccapo_adapters.inprocess",
    ),
    "ccapo_trainer": ("ccapo_trainer.data", "ccapo_trainer.rewards", "ccapo_trainer.errors"),
}
SOURCE_PATHS = [ROOT / part for part in (".", "server", "trainer", "clients/python", "clients/adapters")]
# What makes a browser fetch: scripts, stylesheets, fonts, icons, images, frames, CSS imports and url().
_FETCHED = re.compile(
    r"<(?:script|img|iframe|source|audio|video)\b[^>]*\bsrc=[\"']([^\"']+)"
    r"|<link\b[^>]*\bhref=[\"']([^\"']+)"
    r"|@import\s+(?:url\()?[\"']?([^\"')\s;]+)"
    r"|url\(\s*[\"']?([^\"')]+)",
    re.I,
)


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once per session as `make docs` builds it."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"mkdocs build --strict failed (pip install -e '.[docs]'?):\n{done.stderr[-5000:]}"
    return out


def external_fetches(text: str) -> list[str]:
    """The URLs in HTML or CSS that a browser would fetch from another host."""
    urls = [next(group for group in match.groups() if group) for match in _FETCHED.finditer(text)]
    return [url for url in urls if re.match(r"^(https?:)?//", url.strip())]


def test_every_page_and_public_name_is_on_the_site(site: Path) -> None:
    nav = re.findall(r":\s*(\S+)\.md\s*$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), re.M)
    assert len(nav) >= 14 and not [page for page in nav if not (site / f"{page}.html").is_file()]
    for package in PUBLIC_PACKAGES:
        reference = (site / "reference" / f"{package}.html").read_text(encoding="utf-8")
        public = [name for name in importlib.import_module(package).__all__ if not name.startswith("_")]
        undocumented = [name for name in public if f'id="{package}.{name}"' not in reference]
        assert not undocumented, f"{package}'s reference page lacks {undocumented}"
        for module in PUBLIC_MODULES.get(package, ()):
            names = [f"{module}.{name}" for name in defined_public_names(module)]
            assert names and not [n for n in names if f'id="{n}"' not in reference], (module, names)
    assert (site / "search" / "search_index.json").is_file()


def defined_public_names(module: str) -> list[str]:
    """The names a module defines itself (not imports) without a leading underscore, read statically."""
    import griffe

    loaded = griffe.load(module, search_paths=[str(path) for path in SOURCE_PATHS], allow_inspection=False)
    return [name for name, member in loaded.members.items() if not name.startswith("_") and not member.is_alias]


def test_pydantic_models_are_rendered_as_their_fields(site: Path) -> None:
    """Each field with its type, default and description, not the model's source."""
    from ccapo import ScoringConfig

    reference = (site / "reference" / "ccapo.html").read_text(encoding="utf-8")
    for name in ScoringConfig.model_fields:
        assert f'id="ccapo.ScoringConfig.{name}"' in reference, name
    assert "spans a segmenter may probe per trace" in reference  # a field's description
    assert "Field(" not in reference


def test_the_training_config_page_lists_every_key(site: Path) -> None:
    from ccapo_adapters.config import CounterfactualConfig
    from ccapo_trainer.config import LoraSettings, TrainConfig

    from ccapo import ScoringConfig, WeightConfig

    page = (site / "reference" / "train-config.html").read_text(encoding="utf-8")
    sections = {
        "": TrainConfig,
        "lora.": LoraSettings,
        "counterfactual.": CounterfactualConfig,
        "counterfactual.scoring.": ScoringConfig,
        "counterfactual.scoring.weights.": WeightConfig,
    }
    missing = [
        f"{prefix}{name}"
        for prefix, model in sections.items()
        for name in model.model_fields
        if f"<code>{prefix}{name}</code>" not in page
    ]
    assert not missing, f"the training-config page lacks {missing}"
    # Each row says what its key does: the descriptions are the models' own, so a new field needs one.
    undescribed = [
        f"{prefix}{name}"
        for prefix, model in sections.items()
        for name, field in model.model_fields.items()
        if not field.description
    ]
    assert not undescribed, f"fields without a description (an empty cell on the page): {undescribed}"


def test_the_rest_page_holds_the_servers_own_document(site: Path) -> None:
    from ccapo_server.app import create_app
    from ccapo_server.settings import ServerSettings

    served = create_app(ServerSettings(api_key="k", admin_key="k")).openapi()
    published = json.loads((site / "reference" / "openapi.json").read_text(encoding="utf-8"))
    assert published == served
    page = (site / "reference" / "rest-api.html").read_text(encoding="utf-8")
    ids = [op["operationId"] for item in served["paths"].values() for op in item.values() if "operationId" in op]
    assert ids and not [i for i in ids if f"<code>{i}</code>" not in page]
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "openapi.js"):
        assert (site / "reference" / "swagger" / asset).is_file()


def test_nothing_is_fetched_from_outside_the_site(site: Path) -> None:
    files = [*site.rglob("*.html"), *site.rglob("*.css")]
    outside = {
        str(f.relative_to(site)): urls for f in files if (urls := external_fetches(f.read_text(encoding="utf-8")))
    }
    assert not outside, f"the site fetches from other hosts: {outside}"


def test_the_checker_finds_external_fetches() -> None:
    text = (
        '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">'
        '<script src="//cdn.example/x.js"></script><img src="assets/ok.png">'
        '<a href="https://example.com/">a link is no fetch</a>'
        "<style>@import 'https://cdn.example/a.css'; b { background: url(\"http://x/y.png\") }</style>"
    )
    assert external_fetches(text) == [
        "https://fonts.googleapis.com/css?family=Roboto",
        "//cdn.example/x.js",
        "https://cdn.example/a.css",
        "http://x/y.png",
    ]


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    """The built site over HTTP on loopback (search runs in a web worker, which file:// pages may not start)."""
    handler = functools.partial(QuietHandler, directory=str(site))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{server.server_address[1]}"
        server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_home_search_and_api_pages_work_offline_in_chromium(browser: Any, served: str, artifacts: Path) -> None:
    """Every request other than to the site is refused and recorded; the pages must not make any."""
    context = browser.new_context(service_workers="block")
    outside: list[str] = []

    def only_the_site(route: Any) -> None:
        if urlparse(route.request.url).netloc == urlparse(served).netloc:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_site)
    context.on("request", lambda request: None if request.url.startswith(served) else outside.append(request.url))
    page = context.new_page()
    page.goto(f"{served}/index.html", wait_until="networkidle")
    assert "counterfactual credit assignment" in page.locator("article h1").inner_text()
    page.screenshot(path=str(artifacts / "docs-home.png"), full_page=False)

    page.locator(".md-search__input").click()
    page.keyboard.type("refine_budget")  # typed: the search reads key events
    hits = page.locator(".md-search-result__item")
    hits.first.wait_for(timeout=15_000)
    links = [hits.nth(i).locator("a").first.get_attribute("href") for i in range(hits.count())]
    assert any("long-reasoning.html" in link for link in links), links  # the prose
    assert any("reference/ccapo.html" in link for link in links), links  # and the API reference

    page.goto(f"{served}/reference/ccapo.html", wait_until="networkidle")
    assert page.locator('[id="ccapo.Scorer"]').count() == 1
    assert "from_pretrained" in page.locator("article").inner_text()
    page.screenshot(path=str(artifacts / "docs-api.png"), full_page=False)

    # The REST reference: Swagger UI, from the site's own copy, renders one block per operation.
    page.goto(f"{served}/reference/rest-api.html", wait_until="networkidle")
    operations = page.locator("#swagger-ui .opblock-summary")
    operations.first.wait_for(timeout=15_000)
    assert operations.count() == page.locator("article table tbody tr").count() >= 6
    page.screenshot(path=str(artifacts / "docs-rest.png"), full_page=True)
    for name in ("installation", "quickstart/trl", "choosing-settings", "troubleshooting", "supported-models"):
        page.goto(f"{served}/{name}.html", wait_until="networkidle")
        assert page.locator("article h1").count() == 1 and page.locator("article table, article pre").count() >= 1
    context.close()
    assert not outside, f"requests left the site: {outside}"
