"""Every fenced code block of README.md and of the documentation pages moved out of it runs as
written, in the order a newcomer reads them (PAGES); a block repeated on another page (the home page
mirrors the README) runs once.

Python blocks run in one namespace; bash blocks run command by command with `bash -c`, in a fresh
directory that mirrors the clone (symlinks to its tracked top-level entries and `.venv`), with
`.venv/bin` first on PATH (what `source .venv/bin/activate` gives), so outputs such as `runs/` and
`scored.jsonl` land outside the checkout. A command fails the test if it exits non-zero.

Marker convention (visible in the README): a command whose trailing comment contains `needs: gpu`
or `needs: hub` (e.g. `# needs: gpu, hub`) is skipped here, and so is a python block whose first
line is such a comment. Nothing else is skipped, with two rules for commands that never end:
- a server command (`make run`, `ccapo serve`) starts in the background on a free loopback port
  (CCAPO_PORT), must answer /readyz, then every README command that talks to `127.0.0.1:8000` runs
  against it (the port replaced) and must print JSON without an error; then it is stopped. Those
  client commands are therefore not run again where they stand.
- `make test` is this suite's own entry point; running it here would recurse, so `make -n test`
  checks that the target exists and its recipe expands.
Before the blocks run, the directory gets the `traces.jsonl` the README's `ccapo score` lines read
(one text trace, one token-id trace, in the format the README gives).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import textwrap
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from ccapo_trainer.config import parse_config
from live_server import free_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README] + [
    ROOT / "docs" / f"{name}.md"
    for name in (
        "index",
        "getting-started",
        "scoring",
        "server",
        "training",
        "long-reasoning",
        "performance",
        "changes",
        "architecture",
    )
]
NEEDS = re.compile(r"#.*\bneeds:\s*(gpu|hub)\b")
SERVER_COMMANDS = ("make run", "ccapo serve")
SERVER_ADDRESS = "127.0.0.1:8000"
COMMAND_TIMEOUT_S = 240
READY_TIMEOUT_S = 120


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, also one indented in a list item; unlabelled blocks
    (the layout tree) are not code."""
    found = re.findall(r"^( *)```(\w*)\n(.*?)^\1```", text, re.M | re.S)
    return [(lang, textwrap.dedent(body)) for _, lang, body in found if lang]


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
    assert not pending, f"unterminated command in README: {pending!r}"
    return commands


def code_of(command: str) -> str:
    """The command without its trailing comment."""
    return shlex.join(shlex.split(command, comments=True))


def page_blocks() -> list[tuple[Path, str, str]]:
    """(page, language, body) of every code block of PAGES; a block repeated verbatim, once."""
    seen: set[tuple[str, str]] = set()
    blocks = []
    for page in PAGES:
        for lang, body in fenced_blocks(page.read_text(encoding="utf-8")):
            if (lang, body) not in seen:
                seen.add((lang, body))
                blocks.append((page, lang, body))
    return blocks


def client_commands() -> list[str]:
    commands = (c for _, lang, body in page_blocks() if lang == "bash" for c in shell_commands(body))
    return [c for c in commands if SERVER_ADDRESS in code_of(c)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    """A directory that looks like the clone to the README's commands, plus the user's traces.jsonl."""
    work = tmp_path_factory.mktemp("readme")
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in {line.split("/", 1)[0] for line in tracked.splitlines()} | {".venv"}:
        if (ROOT / name).exists():
            (work / name).symlink_to(ROOT / name)
    prompt_ids = tokenizer("What is 3 + 4?").input_ids
    completion_ids = tokenizer("3 + 4 = 7.\n#### 7", add_special_tokens=False).input_ids
    traces = [
        {"prompt": "What is 2 + 3?", "completion": "2 + 3 = 5.\n#### 5"},
        {"prompt_ids": prompt_ids, "completion_ids": completion_ids},
    ]
    (work / "traces.jsonl").write_text("".join(json.dumps(t) + "\n" for t in traces))
    return work


def command_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCAPO_") or k == "CCAPO_CACHE"}
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(ROOT / ".venv")
    env.update(extra)
    return env


def run_command(command: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env or command_env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    assert done.returncode == 0, (
        f"README command failed ({done.returncode}): {command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


def run_server_command(command: str, cwd: Path) -> None:
    """Start a long-running README command on a free port, use it as the README does, stop it."""
    port = free_port()
    env = command_env(CCAPO_PORT=str(port), CCAPO_HOST="127.0.0.1")
    log = cwd / f"server-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_ready(process, f"http://127.0.0.1:{port}", log)
        for client in client_commands():
            answer = json.loads(run_command(client.replace(SERVER_ADDRESS, f"127.0.0.1:{port}"), cwd))
            assert "error" not in answer and answer.get("results"), f"{client}\n-> {answer}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # make's child server too
        process.wait(timeout=60)


def wait_ready(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"server exited ({process.returncode}):\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"server not ready after {READY_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")


def run_bash_block(body: str, cwd: Path) -> Iterator[str]:
    """Run a bash block; yields each command it skipped (marked as needing a GPU or the hub)."""
    for command in shell_commands(body):
        code = code_of(command)
        if NEEDS.search(command):
            yield command
        elif SERVER_ADDRESS in code:
            continue  # run against each server command (see run_server_command)
        elif code in SERVER_COMMANDS:
            run_server_command(code, cwd)
        elif code == "make test":
            run_command("make -n test", cwd)
        else:
            run_command(command, cwd)


BLOCKS = page_blocks()


@pytest.mark.slow
@pytest.mark.parametrize(
    "index", range(len(BLOCKS)), ids=[f"{page.stem}-block{i}-{lang}" for i, (page, lang, _) in enumerate(BLOCKS)]
)
def test_readme_block_runs_as_written(index: int, workdir: Path, default_model_dir: str) -> None:
    page, lang, body = BLOCKS[index]
    if lang == "python":
        if NEEDS.search(body.splitlines()[0]):
            pytest.skip(f"marked: {body.splitlines()[0]}")
        namespace: dict = {}
        exec(compile(body, f"{page.name} block {index}", "exec"), namespace)  # as a reader pastes it
        if section_of(page, body) == "A 30-second tour":
            check_tour(namespace)
        return
    if lang == "yaml":  # a training-config excerpt: it must load as written, under no deprecated name
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            parse_config(yaml.safe_load(body))
        return
    assert lang == "bash", f"{page.name} block {index} is {lang!r}: only python, yaml and bash blocks are run"
    for skipped in run_bash_block(body, workdir):
        print(f"skipped, marked: {skipped}")


def section_of(page: Path, body: str) -> str:
    """The title of the section (##) of `page` that holds a block."""
    return page.read_text(encoding="utf-8").split(body, 1)[0].rsplit("\n## ", 1)[-1].split("\n", 1)[0]


def check_tour(namespace: dict) -> None:
    """The tour scores both traces, with one weight per given completion token."""
    results = namespace["results"]
    assert [r.status for r in results] == ["ok", "ok"]
    completion_ids = namespace["tokenize"]("3 + 4 = 7 apples.\n#### 7", add_special_tokens=False).input_ids
    assert len(results[1].token_weights) == len(completion_ids)


def test_marked_commands_and_multiline_commands_are_recognised() -> None:
    commands = shell_commands("a  # x\n# note\ncurl -d '{\n  1}'\nb \\\n  c  # needs: gpu, hub\n")
    assert commands == ["a  # x", "curl -d '{\n  1}'", "b \\\n  c  # needs: gpu, hub"]
    assert [bool(NEEDS.search(c)) for c in commands] == [False, False, True]
