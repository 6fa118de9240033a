"""/docs (Swagger UI) works offline: headless Chromium renders it from a real server, and every request
the browser makes goes to that server (others are recorded and refused)."""

from __future__ import annotations

from typing import Any

import httpx

ROUTES = {"/v1/importance", "/v1/model", "/healthz", "/readyz", "/metrics"}


def _open_offline(browser: Any, server_url: str, path: str) -> tuple[Any, list[str]]:
    """A page at server_url + path in which any request off the server is recorded and aborted."""
    off_server: list[str] = []
    context = browser.new_context()

    def gate(route: Any) -> None:
        url = route.request.url
        if url.startswith(f"{server_url}/") or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            off_server.append(url)
            route.abort()

    context.route("**/*", gate)
    page = context.new_page()
    page.goto(f"{server_url}{path}")
    return page, off_server


def test_swagger_ui_lists_the_routes_without_leaving_the_server(browser: Any, server_url: str, artifacts) -> None:
    page, off_server = _open_offline(browser, server_url, "/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)
    shown = set(page.eval_on_selector_all(".opblock-summary-path", "nodes => nodes.map(n => n.dataset.path)"))
    page.screenshot(path=str(artifacts / "api-docs.png"), full_page=True)
    page.wait_for_load_state("networkidle")
    page.context.close()
    assert shown >= ROUTES, f"Swagger UI lists {sorted(shown)}"
    assert off_server == []


def test_there_is_no_redoc_page(server_url: str) -> None:
    """ReDoc's bundle fetches its logo from a CDN, so the server offers Swagger UI only."""
    assert httpx.get(f"{server_url}/redoc").status_code == 404
