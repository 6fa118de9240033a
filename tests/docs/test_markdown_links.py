"""Every relative link in a tracked Markdown file resolves inside the repository (a clone has no
files outside it), or names a page docs_hooks/ generates when the site is built (its `PAGE`). Anchors
are not checked; links with a scheme (https:, mailto:) are skipped."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
# [text](target "title"), ![alt](target), [label]: target, and HTML href="..." / src="...".
_LINKS = (
    re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'(][^)]*)?\)"),
    re.compile(r"^\s{0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE),
    re.compile(r"\b(?:href|src)=[\"']([^\"']+)[\"']"),
)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def relative_links(markdown: str) -> list[str]:
    """The link targets of `markdown` that are relative paths, outside code, without anchors."""
    prose = _INLINE_CODE.sub("", _FENCE.sub("", markdown))
    targets = [m.group(1) for pattern in _LINKS for m in pattern.finditer(prose)]
    paths = [t.split("#", 1)[0].split("?", 1)[0] for t in targets if not _SCHEME.match(t)]
    return [p for p in paths if p]


def generated_pages(root: Path) -> set[Path]:
    """The pages the site's build hooks generate, as paths under docs/ (they are no files)."""
    hooks = sorted((root / "docs_hooks").glob("*.py"))
    pages = [m.group(1) for hook in hooks if (m := re.search(r'^PAGE = "(.+)"$', hook.read_text(), re.M))]
    return {(root / "docs" / page).resolve() for page in pages}


def dead_links(markdown_file: Path, root: Path) -> list[str]:
    dead = []
    generated = generated_pages(root)
    for target in relative_links(markdown_file.read_text(encoding="utf-8")):
        resolved = (root / target.lstrip("/")) if target.startswith("/") else (markdown_file.parent / target)
        resolved = resolved.resolve()
        if not resolved.is_relative_to(root):
            dead.append(f"{target} (outside the repository)")
        elif not resolved.exists() and resolved not in generated:
            dead.append(f"{target} (no such file)")
    return dead


def tracked_markdown() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout, so the tracked files are unknown: {listed.stderr.strip()}")
    return [ROOT / line for line in listed.stdout.splitlines() if line]


def test_every_relative_link_in_tracked_markdown_resolves():
    files = tracked_markdown()
    assert ROOT / "README.md" in files
    broken = {str(f.relative_to(ROOT)): dead for f in files if (dead := dead_links(f, ROOT.resolve()))}
    assert not broken, f"dead relative links (file: targets): {broken}"


def test_the_checker_finds_dead_links_and_ignores_code_and_urls(tmp_path: Path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "there.md").write_text("# there\n")
    (tmp_path / "docs_hooks").mkdir()
    (tmp_path / "docs_hooks" / "made_page.py").write_text('PAGE = "made.md"\n')  # a page the build generates
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "See [there](there.md#top), [up](../docs/there.md), [web](https://example.com/x.md), [made](made.md) and\n"
        '[gone](missing.md), [out](../../elsewhere/METHOD.md), ![pic](img.png "title").\n'
        "[ref]: ./also-missing.md\n"
        "`[code](not-a-link.md)`\n"
        "```\n[fenced](not-a-link-either.md)\n```\n"
        '<img src="gone.png">\n'
    )
    assert dead_links(page, tmp_path.resolve()) == [
        "missing.md (no such file)",
        "../../elsewhere/METHOD.md (outside the repository)",
        "img.png (no such file)",
        "./also-missing.md (no such file)",
        "gone.png (no such file)",
    ]
