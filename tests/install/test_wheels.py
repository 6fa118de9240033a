"""The three distributions build as wheels (`python -m build`, as `make wheels` runs it) and work once
installed: into a fresh virtual environment, from a directory outside the clone, with nothing of the
clone on the path, `ccapo score` scores a trace.

The wheels are installed with `--no-deps`, and the environment borrows its third-party packages from
the one running the tests (a path entry to its site-packages, processed as a plain path so that
the clone's editable installs stay out): a full dependency install copies gigabytes of torch and takes
minutes here. `pip check` then holds that every requirement the wheels declare is met by what the
environment sees, and tests/deploy/test_dockerfile.py resolves the same requirements from scratch.
Cost: about 20-40 s on 2 CPU cores (three wheel builds, one `ccapo score` start-up).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTIONS = {".": "ccapo", "clients/python": "ccapo_client", "clients/adapters": "ccapo_adapters"}


def clean_copy(destination: Path) -> Path:
    """The clone's files as a fresh clone has them (tracked and new, no build output, no venv)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    return destination


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """`python -m build --wheel` of each distribution (without build isolation: the test environment
    has setuptools, and a fresh build environment per wheel would fetch it three times)."""
    source = clean_copy(tmp_path_factory.mktemp("clone"))
    dist = tmp_path_factory.mktemp("dist")
    for project in DISTRIBUTIONS:
        command = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), project]
        done = subprocess.run(command, cwd=source, capture_output=True, text=True)
        assert done.returncode == 0, f"building {project} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return sorted(dist.glob("*.whl"))


def test_each_distribution_builds_one_wheel_with_its_package_data(wheels: list[Path]) -> None:
    import zipfile

    import ccapo

    assert [w.name.split("-")[0] for w in wheels] == sorted(DISTRIBUTIONS.values())
    assert {w.name.split("-")[1] for w in wheels} == {ccapo.__version__}, "the three share one version"
    ccapo_files = zipfile.ZipFile(next(w for w in wheels if w.name.startswith("ccapo-"))).namelist()
    for needed in ("ccapo/viewer/", "ccapo/data/", "ccapo_server/app.py", "ccapo_trainer/config.py"):
        assert any(name.startswith(needed) for name in ccapo_files), f"the ccapo wheel lacks {needed}"
    entry_points = next(name for name in ccapo_files if name.endswith("entry_points.txt"))
    text = zipfile.ZipFile(next(w for w in wheels if w.name.startswith("ccapo-"))).read(entry_points).decode()
    assert "ccapo = ccapo.cli:main" in text and "[ccapo.commands]" in text


def test_the_installed_wheels_score_a_trace_from_the_shell(
    wheels: list[Path], tmp_path: Path, tiny_model_dir: str
) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    subprocess.run([*pip, "install", "--quiet", "--no-deps", *map(str, wheels)], check=True)
    own_site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (own_site / "zz_borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    checked = subprocess.run([*pip, "check"], capture_output=True, text=True)
    assert checked.returncode == 0, f"the wheels' requirements are not met:\n{checked.stdout}{checked.stderr}"

    work = tmp_path / "work"  # outside the clone: nothing of it can be imported from the working directory
    work.mkdir()
    (work / "traces.jsonl").write_text(json.dumps({"prompt": "What is 2 + 3?", "completion": "2 + 3 = 5.\n#### 5"}))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    find = "import importlib.util as u, sys; print(*[u.find_spec(m).origin for m in sys.argv[1:]])"  # no import
    packages = ["ccapo", "ccapo_server", "ccapo_trainer", "ccapo_client", "ccapo_adapters"]
    where = subprocess.run(
        [str(python), "-c", find, *packages], cwd=work, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert len(where) == len(packages) and all(Path(path).is_relative_to(own_site) for path in where), where
    score = [str(env_dir / "bin" / "ccapo"), "score", "traces.jsonl", "-o", "scored.jsonl", "--model", tiny_model_dir]
    done = subprocess.run(score, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((work / "scored.jsonl").read_text())
    assert result["status"] == "ok" and len(result["token_weights"]) > 0
