"""The README and the documentation pages are written for their readers: no words about how the work
on them was organized (an issue, a session, a helper, a machine lent or not) and no release left
unnamed ("this release"): a change belongs to a version (docs/changes.md)."""

from __future__ import annotations

import re

import pytest
from doc_blocks import ROOT, pages

PROCESS_WORDING = re.compile(
    r"\bthis (?:issue|session|helper)\b|\bthe (?:issue|helper)(?:'s)?\b"
    r"|\bbefore this change\b"
    r"|\$OUT/"
    r"|\blent to\b"
    r"|\b(?:this|one|next) release\b",
    re.IGNORECASE,
)


def process_wording(text: str) -> list[str]:
    """Each line holding process wording, numbered."""
    return [f"{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1) if PROCESS_WORDING.search(line)]


@pytest.mark.parametrize("page", pages(), ids=lambda page: str(page.relative_to(ROOT)))
def test_a_page_speaks_to_its_reader(page) -> None:
    found = process_wording(page.read_text(encoding="utf-8"))
    assert not found, f"{page.relative_to(ROOT)} has process wording: {found}"


def test_the_checker_finds_process_wording() -> None:
    text = (
        "Above the issue's 20-50% band.\nBefore this change, it was slow.\nSee $OUT/gpu_check.md.\n"
        "No GPU was lent to this machine.\nKept for one release.\nThe task runner (verl) is fine on this task.\n"
    )
    assert [line.split(":")[0] for line in process_wording(text)] == ["1", "2", "3", "4", "5"]
