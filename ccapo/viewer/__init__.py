"""The importance view as web files, shared by the scoring server's page and `ccapo render`.

`view.js` and `view.css` draw TraceImportance dicts; `page.html`/`page.js` are the server's scoring
page and `report.html` the standalone report. Templates mark their blanks as `$name`.
"""

from __future__ import annotations

from importlib import resources
from string import Template


def asset(name: str) -> str:
    """The text of one file of the view, e.g. "view.js"."""
    return (resources.files(__name__) / name).read_text(encoding="utf-8")


def fill(template: str, **values: str) -> str:
    """A template file with every `$name` replaced; a blank left unfilled is an error, not a silent gap."""
    return Template(asset(template)).substitute(values)
