"""The code blocks of the README and the documentation site, and how each is checked.

A block is *held* when another test already runs what it shows: the line before its fence is an
HTML comment naming those tests, `<!-- held by: tests/trainer/test_loop.py::test_x, ... -->`
(invisible on the page). A held block is not run again here; the tests it names must exist. Every other block runs (see
test_doc_blocks.py). A command whose trailing comment says `needs: gpu` or `needs: hub` is skipped,
and so is a python block whose first line says so.
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NEEDS = re.compile(r"#.*\bneeds:\s*(gpu|hub)\b")
_FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.M | re.S)
_HELD_BY = re.compile(r"<!--\s*held by:\s*(.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    body: str
    held_by: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    """README.md, then every Markdown page of the site, in the order the site's nav lists them (the
    pages docs_hooks/ generates at build time, which are not files, left out)."""
    listed = subprocess.run(["git", "ls-files", "docs"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    tracked = {ROOT / line for line in listed.splitlines() if line.endswith(".md")}
    in_nav = [ROOT / "docs" / page for page in re.findall(r":\s*(\S+\.md)\s*$", _mkdocs_text(), re.M)]
    in_nav = [page for page in in_nav if page in tracked]
    return [ROOT / "README.md", *in_nav, *sorted(tracked - set(in_nav))]


def _mkdocs_text() -> str:
    return (ROOT / "mkdocs.yml").read_text(encoding="utf-8")


def page_blocks(page: Path) -> list[Block]:
    """The labelled fenced blocks of a page (unlabelled ones, like the layout tree, are not code),
    also those indented in a list item, with the tests that hold each."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in _FENCE.finditer(text):
        _, lang, body = match.groups()
        if not lang:
            continue
        line = text.count("\n", 0, match.start()) + 1
        body = textwrap.dedent(body)
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        held = _HELD_BY.search(before)
        held_by = tuple(t.strip() for t in held.group(1).split(",")) if held else ()
        blocks.append(Block(page, line, lang, body, held_by))
    return blocks


def site_blocks() -> list[Block]:
    """Every block of every page; a block repeated verbatim (the home page mirrors the README) once."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for page in pages():
        for block in page_blocks(page):
            if (block.lang, block.body) not in seen:
                seen.add((block.lang, block.body))
                unique.append(block)
    return unique


def missing_tests(node_ids: tuple[str, ...]) -> list[str]:
    """The pytest node ids (`path::test` or `path::Class::test`, parameters ignored) that name no
    test function in the repository."""
    missing = []
    for node_id in node_ids:
        path, *names = re.sub(r"\[.*\]$", "", node_id).split("::")
        file = ROOT / path
        if not names or not file.is_file() or not _defines(ast.parse(file.read_text(encoding="utf-8")), names):
            missing.append(node_id)
    return missing


def _defines(scope: ast.AST, names: list[str]) -> bool:
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    found = [node for node in ast.iter_child_nodes(scope) if isinstance(node, kinds) and node.name == names[0]]
    return bool(found) and (len(names) == 1 or _defines(found[0], names[1:]))


def shell_commands(body: str) -> list[str]:
    """Split a bash block into commands: comment lines are dropped; a line that leaves a quote open
    (the curl JSON body) or ends in a backslash continues onto the next."""
    commands, pending = [], ""
    for line in body.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending = f"{pending}\n{line}" if pending else line
        if pending.endswith("\\"):
            continue
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the command goes on
            continue
        commands.append(pending)
        pending = ""
    assert not pending, f"unterminated command: {pending!r}"
    return commands


def words_of(command: str) -> list[str]:
    """The command's words, without its trailing comment."""
    return shlex.split(command, comments=True)


def section_of(block: Block) -> str:
    """The title of the section (##) of its page that holds a block."""
    text = block.page.read_text(encoding="utf-8")
    before = "\n".join(text.splitlines()[: block.line])
    return before.rsplit("\n## ", 1)[-1].split("\n", 1)[0]
