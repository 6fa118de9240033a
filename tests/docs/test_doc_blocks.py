"""Every code block of the README and the documentation site is checked, in the order a reader meets
them, at the smallest cost that still shows what the block shows (doc_blocks.py finds the blocks).

- A held block (`<!-- held by: ... -->` before it) is not run: the tests it names must exist, and
  its `ccapo train` / `-m ccapo_trainer` configs must load with their overrides.
- python blocks run as written, one namespace per block, with the tests' tiny random-init model as
  `Scorer.from_pretrained()`'s and `ensure_default_model()`'s default (the real default model's drops are held by
  tests/core/test_default_model.py); yaml blocks load as training configs, under no deprecated name.
- bash blocks run command by command: `make X` as `make -n X` (its recipe expands; running it
  would set up an environment or recurse into this suite); `ccapo ...` in-process, with the tiny
  model (`--model`) where the command takes one and one trace where it takes `-n`; `ccapo serve`
  parses its flags, and the commands that talk to `127.0.0.1:8000` (curl) run against a real
  server (the suite's shared one) instead; `python bench/X.py ...` in-process, with the tiny model.
  Any other command fails the test: hold its block by a test or mark it `# needs: gpu` / `hub`.
The commands run in a fresh directory holding the `traces.jsonl` the pages' `ccapo score` lines
read (one text trace, one token-id trace, in the format the pages give).
"""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
import warnings
from pathlib import Path

import ccapo_trainer.data
import ccapo_trainer.rewards
import pytest
import yaml
from ccapo_trainer.config import load_config, parse_config
from doc_blocks import NEEDS, ROOT, Block, missing_tests, section_of, shell_commands, site_blocks, words_of

import ccapo.models
from ccapo import Scorer
from ccapo.cli import main as ccapo_main
from ccapo.render import find_chromium

BLOCKS = site_blocks()
SERVER_ADDRESS = "127.0.0.1:8000"
MODEL_COMMANDS = {"score", "demo", "bench", "faithfulness"}  # `ccapo X` that take --model
SMALLEST_N = "1"  # traces for `ccapo bench` / `faithfulness -n`: one shows the table as well as 30
COMMAND_TIMEOUT_S = 60


def ids(blocks: list[Block]) -> list[str]:
    return [f"{block.name}-{block.lang}" for block in blocks]


HELD = [block for block in BLOCKS if block.held_by]
RUN = [block for block in BLOCKS if not block.held_by]


@pytest.mark.parametrize("block", HELD, ids=ids(HELD))
def test_a_held_block_names_tests_that_exist(block: Block) -> None:
    assert not missing_tests(block.held_by), f"{block.name} is held by tests that do not exist: {block.held_by}"


def test_training_commands_load_their_configs() -> None:
    """Held or not, needing a GPU or not, a training command's config and overrides load as written."""
    commands = [words_of(c) for b in BLOCKS if b.lang == "bash" for c in shell_commands(b.body)]
    training = [w for w in commands if "--config" in w and ("train" in w[:2] or "ccapo_trainer" in w)]
    assert len(training) >= 5, "the training page's commands are found"
    for words in training:
        after = words[words.index("--config") + 1 :]
        overrides = [word for word in after[1:] if "=" in word and not word.startswith("-")]
        load_config(ROOT / after[0], overrides)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    """A fresh directory with the user's traces.jsonl."""
    work = tmp_path_factory.mktemp("docs")
    prompt_ids = tokenizer("What is 3 + 4?").input_ids
    completion_ids = tokenizer("3 + 4 = 7.\n#### 7", add_special_tokens=False).input_ids
    traces = [
        {"prompt": "What is 2 + 3?", "completion": "2 + 3 = 5.\n#### 5"},
        {"prompt_ids": prompt_ids, "completion_ids": completion_ids},
    ]
    (work / "traces.jsonl").write_text("".join(json.dumps(t) + "\n" for t in traces))
    return work


@pytest.mark.parametrize("block", RUN, ids=ids(RUN))
def test_a_block_runs_as_written(
    block: Block, workdir: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workdir)
    if block.lang == "python":
        tiny_by_default(monkeypatch, request.getfixturevalue("tiny_model_dir"))
        # What an example registers stays with it: the registries are process-wide.
        monkeypatch.setattr(ccapo_trainer.data, "TASKS", dict(ccapo_trainer.data.TASKS))
        monkeypatch.setattr(ccapo_trainer.rewards, "REWARDS", dict(ccapo_trainer.rewards.REWARDS))
        run_python(block)
    elif block.lang == "yaml":  # a training-config excerpt: it must load as written, under no deprecated name
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            parse_config(yaml.safe_load(block.body))
    else:
        assert block.lang == "bash", f"{block.name} is {block.lang!r}: only python, yaml and bash blocks are checked"
        for command in shell_commands(block.body):
            run_command(command, block, request, monkeypatch)


def tiny_by_default(monkeypatch: pytest.MonkeyPatch, tiny: str) -> None:
    """`Scorer.from_pretrained()` without a model loads the tiny one, and the default model's directory
    (`ccapo.models.ensure_default_model()`, which the TRL quickstart loads) is the tiny one's: `--model`
    for python blocks."""
    pretrained = Scorer.from_pretrained.__func__
    monkeypatch.setattr(
        Scorer, "from_pretrained", classmethod(lambda cls, model=None, **kw: pretrained(cls, model or tiny, **kw))
    )
    monkeypatch.setattr(ccapo.models, "ensure_default_model", lambda: Path(tiny))


def run_python(block: Block) -> None:
    first = block.body.splitlines()[0]
    if NEEDS.search(first):
        pytest.skip(f"marked: {first}")
    namespace: dict = {}
    exec(compile(block.body, block.name, "exec"), namespace)  # as a reader pastes it
    if section_of(block) == "A 30-second tour":
        check_tour(namespace)


def check_tour(namespace: dict) -> None:
    """The tour scores both traces, with one weight per given completion token."""
    results = namespace["results"]
    assert [r.status for r in results] == ["ok", "ok"]
    completion_ids = namespace["tokenize"]("3 + 4 = 7 apples.\n#### 7", add_special_tokens=False).input_ids
    assert len(results[1].token_weights) == len(completion_ids)


def run_command(command: str, block: Block, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    words = words_of(command)
    if NEEDS.search(command):
        print(f"skipped, marked: {command}")
    elif words[0] == "make":
        run_shell(["make", "--no-print-directory", "-n", *words[1:]], cwd=ROOT)
    elif words[0] == "curl":
        url = request.getfixturevalue("server_url").removeprefix("http://")
        answer = json.loads(run_shell(["bash", "-c", command.replace(SERVER_ADDRESS, url)]))
        assert "error" not in answer and answer.get("results"), f"{command}\n-> {answer}"
    elif words[0] == "ccapo":
        run_ccapo(words[1:], request)
    elif words[0] == "python" and words[1].startswith("bench/"):
        model = request.getfixturevalue("tiny_model_dir")
        monkeypatch.setattr(sys, "argv", [words[1], *words[2:], "--model", model])
        runpy.run_path(str(ROOT / words[1]), run_name="__main__")
    else:
        pytest.fail(f"{block.name}: no cheap way to check `{command}`: hold the block by a test or mark it")


def run_ccapo(argv: list[str], request: pytest.FixtureRequest) -> None:
    if argv[0] == "serve":  # parse only: the curl commands exercise a real server
        from ccapo_server.cli import settings_from_args

        settings_from_args(argv[1:])
        return
    if argv[0] in MODEL_COMMANDS and "--model" not in argv:
        argv = [*argv, "--model", request.getfixturevalue("tiny_model_dir")]
    if "-n" in argv:
        argv[argv.index("-n") + 1] = SMALLEST_N
    if "--png" in argv and find_chromium() is None:
        at = argv.index("--png")
        argv = argv[:at] + argv[at + 2 :]
        print("no Chromium: `ccapo render` checked without --png (the page tests skip too)")
    assert ccapo_main(argv) == 0, f"ccapo {' '.join(argv)} failed"


def run_shell(command: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert done.returncode == 0, f"failed ({done.returncode}): {command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_marked_commands_and_multiline_commands_are_recognised() -> None:
    commands = shell_commands("a  # x\n# note\ncurl -d '{\n  1}'\nb \\\n  c  # needs: gpu, hub\n")
    assert commands == ["a  # x", "curl -d '{\n  1}'", "b \\\n  c  # needs: gpu, hub"]
    assert [bool(NEEDS.search(c)) for c in commands] == [False, False, True]


def test_held_by_comments_and_missing_tests_are_read(tmp_path: Path) -> None:
    from doc_blocks import page_blocks

    page = ROOT / "docs" / "training.md"
    held = [block for block in page_blocks(page) if block.held_by]
    assert held, "training.md's blocks are held by the trainer's tests"
    assert missing_tests(("tests/docs/test_doc_blocks.py::test_held_by_comments_and_missing_tests_are_read",)) == []
    assert missing_tests(("tests/docs/test_doc_blocks.py::test_nothing", "tests/nowhere.py::test_x")) == [
        "tests/docs/test_doc_blocks.py::test_nothing",
        "tests/nowhere.py::test_x",
    ]
