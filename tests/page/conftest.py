"""Headless Chromium for the page and report tests, driven by Playwright with the system browser.

Playwright never downloads a browser here: it drives the Chromium that `find_chromium` finds (the
one `ccapo render --png` uses too). Without one, the browser tests skip and say how to get it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ccapo.render import find_chromium

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"  # git-ignored; screenshots to look at


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium, one per test module (so no Playwright event loop outlives the module)."""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium: install Debian's `chromium` (make test does, where it can) or set CCAPO_CHROMIUM")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is missing: pip install -e '.[dev]'")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium,
            args=["--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
        )
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
