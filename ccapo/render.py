"""`ccapo render`: scoring results as one standalone HTML page, and a picture of it via headless Chromium.

The page is the scoring server's view (`ccapo/viewer`) with its CSS, its script and the results
inlined, so it opens anywhere, offline, and can be mailed or attached to a paper as is.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import ccapo
from ccapo.viewer import asset, fill

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PNG_WIDTH = 1280  # CSS pixels: the wide layout, as on a laptop
_MAX_PNG_HEIGHT = 16_000  # Chromium cannot capture much taller pages in one image
_CHROMIUM_TIMEOUT_S = 120
_HEIGHT = re.compile(r'<html[^>]*\bdata-height="(\d+)"')


class ChromiumNotFound(RuntimeError):
    """No Chromium or Chrome to take the picture with."""


def render_report(
    results: Sequence[Mapping[str, Any]], title: str = "ccapo span importance", labels: Sequence[str] | None = None
) -> str:
    """A standalone HTML page showing each result (a `TraceImportance.to_dict()`), shaded on one shared scale.

    `labels` name the results (default "trace 1", "trace 2", ...).
    """
    if labels is not None and len(labels) != len(results):
        raise ValueError(f"got {len(labels)} labels for {len(results)} results")
    names = list(labels) if labels is not None else [f"trace {i}" for i in range(1, len(results) + 1)]
    count = f"{len(results)} trace{'s' if len(results) != 1 else ''}"
    return fill(
        "report.html",
        title=escape(title),
        summary=escape(f"{count} · made with ccapo {ccapo.__version__}"),
        css=asset("view.css"),
        view_js=asset("view.js"),
        data=_script_literal({"results": list(results), "labels": names}),
    )


def _script_literal(value: Any) -> str:
    """`value` as a JavaScript literal to place inside <script>.

    Not JSON for JSON.parse: a log-prob can be -Infinity, which json.dumps writes as a bare
    `-Infinity` that JavaScript evaluates as itself. Every "<" is escaped, so no string in the data
    can close the script element.
    """
    return json.dumps(value, ensure_ascii=False).replace("<", "\\u003c")


def find_chromium() -> str | None:
    """Chromium's path: $CCAPO_CHROMIUM if set, else the first of `CHROMIUM_NAMES` on PATH."""
    configured = os.environ.get("CCAPO_CHROMIUM")
    if configured:
        return shutil.which(configured)
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def write_png(html_path: Path, png_path: Path, width: int = PNG_WIDTH, scale: float = 2.0) -> None:
    """A screenshot of the page at `html_path`, `width` CSS pixels wide, as tall as the page.

    A report records its height on <html data-height>; other pages get one screen (800 px).
    `scale` is the device pixel ratio: 2 gives the crisp picture a paper needs.
    """
    chromium = find_chromium()
    if chromium is None:
        raise ChromiumNotFound(
            "a PNG needs Chromium or Chrome: install it (Debian and Ubuntu: apt-get install chromium) "
            "or set CCAPO_CHROMIUM to its path"
        )
    url = Path(html_path).resolve().as_uri()
    png_path = Path(png_path).resolve()
    with tempfile.TemporaryDirectory(prefix="ccapo-chromium-") as profile:
        # The first run only lays the page out at this width, so the second can size the window to it.
        dom = _chromium(chromium, profile, [f"--window-size={width},800", "--dump-dom", url])
        found = _HEIGHT.search(dom)
        height = min(int(found.group(1)), _MAX_PNG_HEIGHT) if found else 800
        png_path.unlink(missing_ok=True)
        size = [f"--window-size={width},{height}", f"--force-device-scale-factor={scale}"]
        _chromium(chromium, profile, [*size, f"--screenshot={png_path}", url])
    if not png_path.is_file() or png_path.stat().st_size == 0:
        raise RuntimeError(f"Chromium wrote no picture to {png_path}")


def _chromium(chromium: str, profile: str, args: list[str]) -> str:
    """Run headless Chromium once with a throwaway profile and nothing that reaches the network; its stdout."""
    command = [
        chromium,
        "--headless",
        "--no-sandbox",  # Chromium's sandbox refuses to run as root, as in containers and CI
        "--disable-gpu",
        "--hide-scrollbars",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={profile}",
        *args,
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_CHROMIUM_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"Chromium did not finish within {_CHROMIUM_TIMEOUT_S} s") from None
    if done.returncode != 0:
        raise RuntimeError(f"Chromium failed with exit code {done.returncode}:\n{done.stderr[-2000:]}")
    return done.stdout
