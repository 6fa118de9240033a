"""The Dockerfile's install steps, replayed without Docker: its COPY lines into a temporary /app and
its RUN lines (all `pip install`) into a fresh virtualenv, with --build-arg TORCH set to the CPU
build. The image's two entry points must then work: `ccapo serve --help`, `ccapo train --help`.

It installs the whole stack, so it takes about 1.5-3 minutes (pip reuses the machine's wheels and
cache); it is the only check of the image's contents short of `docker build`. `make test-install` runs
it (CCAPO_FRESH_ENV_PYTHON, the Python to make the environment with, as the image's own Python); the
main suite skips it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_ARGS = {"TORCH": "torch==2.13.0"}  # the CPU build; the image's default is PyPI's (CUDA) torch
IGNORED = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".pytest_cache")

PYTHON = os.environ.get("CCAPO_FRESH_ENV_PYTHON")
pytestmark = pytest.mark.skipif(not PYTHON, reason="installs the whole stack anew: `make test-install`")


def dockerfile_steps(text: str) -> list[tuple[str, str]]:
    """(instruction, arguments) per Dockerfile line, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    steps = []
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, arguments = line.strip().partition(" ")
            steps.append((instruction.upper(), arguments.strip()))
    return steps


def replay(steps: list[tuple[str, str]], app: Path, python: Path) -> None:
    args: dict[str, str] = {}
    for instruction, arguments in steps:
        if instruction == "ARG":
            name, _, default = arguments.partition("=")
            args[name] = BUILD_ARGS.get(name, default)
        elif instruction == "COPY":
            *sources, destination = shlex.split(arguments)
            target = app / destination if destination not in (".", "./") else app
            for source in sources:
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, target, ignore=IGNORED, dirs_exist_ok=True)
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / source, target / Path(source).name)
        elif instruction == "RUN":
            command = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], arguments)
            words = shlex.split(command)
            assert words[:2] == ["pip", "install"], f"only `pip install` steps can be replayed here: RUN {arguments}"
            subprocess.run([str(python), "-m", "pip", "install", "--quiet", *words[2:]], cwd=app, check=True)


@pytest.fixture(scope="module")
def image_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("image")
    env_dir, app = root / "venv", root / "app"
    app.mkdir()
    subprocess.run([PYTHON, "-m", "venv", str(env_dir)], check=True)
    steps = dockerfile_steps((ROOT / "Dockerfile").read_text())
    assert ("COPY", "trainer trainer") in steps, "the image must hold the trainer"
    replay(steps, app, env_dir / "bin" / "python")
    return env_dir / "bin"


@pytest.mark.skipif(sys.platform != "linux", reason="replays a Linux image's install steps")
@pytest.mark.parametrize("command", ["serve", "train"])
def test_the_image_commands_work(image_bin: Path, command: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = subprocess.run(
        [str(image_bin / "ccapo"), command, "--help"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: ccapo {command}")


def test_the_image_installs_every_part(image_bin: Path) -> None:
    """Library, server, trainer, client and adapters import from the image's environment."""
    modules = ["ccapo", "ccapo_server", "ccapo_trainer", "ccapo_client", "ccapo_adapters", "peft", "fastapi_offline"]
    code = "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]"
    out = subprocess.run([str(image_bin / "python"), "-c", code, *modules], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
