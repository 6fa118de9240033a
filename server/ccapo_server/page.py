"""The heatmap page: `GET /`, the view files it loads, and the bundled examples for its dropdown.

These routes are public: the page holds no data, and the scoring requests it makes carry the API
key like any other client's. Everything the page needs is served from here; its Content-Security-
Policy lets it load nothing from anywhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import get_args

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

from ccapo import ScoringConfig, Trace
from ccapo.examples import load_examples
from ccapo.interventions import INTERVENTIONS
from ccapo.spans import SegmenterName
from ccapo.viewer import asset, fill
from ccapo.weights import Scheme
from ccapo_server.errors import ApiError
from ccapo_server.schemas import SCORING

_STATIC_TYPES = {
    "view.js": "text/javascript; charset=utf-8",
    "page.js": "text/javascript; charset=utf-8",
    "view.css": "text/css; charset=utf-8",
}
# `style-src 'self'` still lets the view set colors through the CSSOM, which is all it does.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# Assets change with the installed version; revalidating keeps a browser from mixing old and new.
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def add_page_routes(app: FastAPI, api_key_required: bool) -> None:
    """`GET /` (the page), `GET /static/{name}` (its script and styles) and `GET /v1/examples`."""
    page = _page(api_key_required)
    static = {name: asset(name) for name in _STATIC_TYPES}
    examples = load_examples()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={**_HEADERS, "Content-Security-Policy": _CSP})

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str) -> Response:
        if name not in static:
            raise ApiError("not_found", f"no static file {name!r}; there are {', '.join(sorted(static))}")
        return Response(static[name], media_type=_STATIC_TYPES[name], headers=_HEADERS)

    @app.get(
        "/v1/examples",
        response_model=list[Trace],
        response_model_exclude_none=True,
        operation_id="list_examples",
        tags=[SCORING],
        summary="The bundled example traces (the page's dropdown)",
    )
    async def bundled_examples() -> list[Trace]:
        return examples


def _page(api_key_required: bool) -> str:
    """page.html with its choices filled in from the library itself, so they cannot go stale."""
    defaults = ScoringConfig()
    # "custom" means caller-given spans, which the form has no field for.
    segmenters = [name for name in get_args(SegmenterName) if name != "custom"]
    if api_key_required:
        placeholder, hint = "this server needs a key", "Kept in this browser only, and sent with each request."
    else:
        placeholder, hint = "not needed here", "This server is open; a key is only needed where one is set."
    return fill(
        "page.html",
        segmenter_options=_options(segmenters, defaults.segmenter),
        intervention_options=_options(INTERVENTIONS, defaults.intervention),
        scheme_options=_options(get_args(Scheme), defaults.weights.scheme),
        key_placeholder=escape(placeholder),
        key_hint=escape(hint),
    )


def _options(values: Sequence[str], selected: str) -> str:
    return "".join(
        f'<option value="{escape(v)}"{" selected" if v == selected else ""}>{escape(v)}</option>' for v in values
    )
