"""The REST API reference page, generated from the scoring server's own OpenAPI document.

At build time the app is created (no model is loaded: that happens at its start-up) and its
`openapi()` document is written into the site as `reference/openapi.json`, listed on the page as a
table of operations, and rendered by Swagger UI from the copy `fastapi-offline` ships (the assets
the server's own /docs uses), so the page loads nothing from outside the site. The document is also
given as a script (`openapi.js`), which a page opened from the file system can load where it could
not fetch JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

PAGE = "reference/rest-api.md"
ASSETS = "reference/swagger"
METHODS = ("get", "post", "put", "patch", "delete")


def openapi_document() -> dict[str, Any]:
    from ccapo_server.app import create_app
    from ccapo_server.settings import ServerSettings

    # Both keys set, as on a server that loads models on request: without an admin key the model-loading
    # routes are left out of the document. The keys' values never appear in it.
    return create_app(ServerSettings(api_key="reference", admin_key="reference")).openapi()


def operations_table(document: dict[str, Any]) -> list[str]:
    rows = ["| method and path | operation id | tags | summary |", "|---|---|---|---|"]
    for path, item in document["paths"].items():
        for method in METHODS:
            if operation := item.get(method):
                tags = ", ".join(operation.get("tags", []))
                summary = operation.get("summary", "").replace("|", "\\|")
                rows.append(
                    f"| `{method.upper()} {path}` | `{operation.get('operationId', '')}` | {tags} | {summary} |"
                )
    return rows


def page_text(document: dict[str, Any]) -> str:
    info = document["info"]
    lines = [
        "# REST API",
        "",
        f"The scoring server's API ({info['title']} {info['version']}, OpenAPI {document['openapi']}),",
        "generated from the server's own document: [`openapi.json`](openapi.json), the same document a",
        "running server serves at `/openapi.json` (and as Swagger UI at `/docs`). A client generator",
        "takes it as it is. It is the document of a server with an API key and an admin key set; without an",
        "admin key (`CCAPO_ADMIN_KEY`) the model-loading routes are off and left out of it. What the routes do,",
        "their limits, errors and settings: [Scoring server](../server.md).",
        "",
        "## Operations",
        "",
        *operations_table(document),
        "",
        "## Schemas and responses",
        "",
        "Every request body, response and error, as Swagger UI shows them (no requests are sent from this page).",
        "",
        f'<link rel="stylesheet" href="{Path(ASSETS).name}/swagger-ui.css">',
        '<div id="swagger-ui" class="ccapo-swagger"></div>',
        f'<script src="{Path(ASSETS).name}/swagger-ui-bundle.js"></script>',
        f'<script src="{Path(ASSETS).name}/openapi.js"></script>',
        "<script>",
        'SwaggerUIBundle({spec: window.CCAPO_OPENAPI, dom_id: "#swagger-ui", validatorUrl: null,',
        '  supportedSubmitMethods: [], defaultModelsExpandDepth: 0, docExpansion: "list"});',
        "</script>",
    ]
    return "\n".join(lines) + "\n"


def on_files(files: Files, config: Any) -> Files:
    import fastapi_offline

    document = openapi_document()
    text = json.dumps(document, indent=1)
    # "<" escaped: the script must not hold "</script>" or "<!--" inside a string.
    script = "window.CCAPO_OPENAPI = " + json.dumps(document).replace("<", "\\u003c") + ";\n"
    static = Path(fastapi_offline.__file__).parent / "static"
    files.append(File.generated(config, PAGE, content=page_text(document)))
    files.append(File.generated(config, "reference/openapi.json", content=text))
    files.append(File.generated(config, f"{ASSETS}/openapi.js", content=script))
    for asset in ("swagger-ui.css", "swagger-ui-bundle.js"):
        files.append(File.generated(config, f"{ASSETS}/{asset}", abs_src_path=str(static / asset)))
    return files
