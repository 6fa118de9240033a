"""`make gpu-bundle`: what a GPU machine without network needs to run bench/gpu_check.py, in one folder.

    python bench/gpu_bundle.py                                  # gpu-bundle/, for Python 3.12
    python bench/gpu_bundle.py --dest build/b311 --python-version 3.11

The folder holds, under --limit-mib (64: what a lent GPU machine carries of the working tree):
- wheels of every third-party package the check imports, for that Python on manylinux x86_64
  (pure-python or binary), never torch nor its CUDA packages: the machine brings its own torch;
- the ccapo wheels (core, server and trainer; client; adapters), built from this checkout;
- requirements.txt: what `bench/gpu_check.py` installs from the wheels with no index;
- tokenizer/: the default model's tokenizer files (no weights; the check builds random models);
- gsm_problems.jsonl: GSM-style problems as `ccapo.gsm` generates them, in place of reasoning-gym;
- manifest.json: the Python version, the wheels of ours, the requirements, what was left out and why,
  and every file's size.

The third-party set is what pip resolves for the core's dependencies with the server and LoRA extras,
the trainer's answer checker, the HTTP client and the client packages, with torch pinned to a stand-in
wheel of no dependencies, so nothing of torch's own is resolved; then what every machine with torch
has (its own dependencies) and what the lent machine has (`--has`, by default numpy) are left out.
Needs pip and PyPI, git (the files to build from) and this checkout's ccapo (the tokenizer, the problems).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT_MIB = 64
MANIFEST = "manifest.json"
REQUIREMENTS = "requirements.txt"
TOKENIZER = "tokenizer"
PROBLEMS = "gsm_problems.jsonl"
# Ours: the core (with the server and trainer packages), the HTTP client, the framework adapters.
OURS = {"ccapo": ROOT, "ccapo-client": ROOT / "clients/python", "ccapo-adapters": ROOT / "clients/adapters"}
# The core's extras the check runs (the trainer's `train` extra would pull datasets and pyarrow, which one
# GRPO step on a built-in task never imports), and the trainer's pieces it does import.
EXTRAS = ("server", "lora")
TRAIN_PIECES = ("math-verify", "ccapo-adapters")
BENCH = ("httpx",)  # bench/server_load.py's client, from the dev extra
# Tags a GPU machine with a CUDA torch (glibc 2.28 or newer) runs.
PLATFORMS = (
    "manylinux2014_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_28_x86_64",
)
NEVER = re.compile(r"^(torch|triton|nvidia[-_].*|cuda[-_].*)$", re.IGNORECASE)
# Core dependencies the check does without: reasoning-gym generates GSM problems, and with its plotting
# stack (cellpylib imports matplotlib) it would not fit; the bundle carries the problems instead.
LEFT_OUT = {"reasoning-gym": f"the check reads its GSM problems from {PROBLEMS}"}
# torch's own dependencies: wherever torch is installed, they are.
WITH_TORCH = ("sympy", "mpmath", "networkx", "jinja2", "markupsafe", "setuptools")
# Already on the lent machine beside its transformers 5.17 (numpy alone is 16 MiB); `--has` changes it.
MACHINE_HAS = ("numpy",)
PROBLEM_COUNT = 200  # the horizon section chains ~45 per 4k-token trace; the server and reference take 32


class BundleError(RuntimeError):
    """The bundle cannot be built as asked (too large, a wheel missing); says what to change."""


def name_of(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;@(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def requirements() -> list[str]:
    """Every third-party requirement the check installs, as the pyproject files write them (torch and
    what the check does without left out), then ours but the core (installed with no dependencies)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    found = [*project["dependencies"], *(r for extra in EXTRAS for r in extras[extra])]
    found += [r for r in extras["train"] if name_of(r) in TRAIN_PIECES]
    found += [r for r in extras["dev"] if name_of(r) in BENCH]
    for client in ("clients/python", "clients/adapters"):
        found += tomllib.loads((ROOT / client / "pyproject.toml").read_text())["project"]["dependencies"]
    unique: dict[str, None] = {}
    for requirement in found:
        name = name_of(requirement)
        if not NEVER.match(name) and name not in LEFT_OUT and name != "ccapo":
            unique.setdefault(requirement.split(";")[0].strip(), None)
    return list(unique)


def torch_floor() -> str:
    """The lowest torch the core accepts: the stand-in wheel's version."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if name_of(d) == "torch"]
    return re.search(r">=\s*([\w.]+)", spec).group(1)


def stand_in_torch(directory: Path) -> Path:
    """A wheel named torch with no files and no dependencies: pip resolves everything else against it."""
    version = f"{torch_floor()}+gpubundle"
    info = f"torch-{version}.dist-info"
    wheel = directory / f"torch-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
        zf.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: gpu_bundle\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        zf.writestr(f"{info}/RECORD", "")
    (directory / "constraints.txt").write_text(f"torch=={version}\n")
    return wheel


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "--quiet"], check=True)


def build_ours(directory: Path) -> dict[str, Path]:
    """This checkout's three wheels, built from a copy of the files a GPU machine gets (tracked, and untracked
    but not ignored), so no build folder or egg-info of this checkout ends up in them or is left behind."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        capture_output=True, check=True, text=True,
    ).stdout  # fmt: skip
    source = directory / "source"
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    folders = [str(source / folder.relative_to(ROOT)) for folder in OURS.values()]
    pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(directory), *folders)
    wheels = {}
    for name in OURS:
        (wheel,) = directory.glob(f"{name.replace('-', '_')}-*.whl")
        wheels[name] = wheel
    return wheels


def resolving(work: Path) -> list[str]:
    """pip's options that resolve against the stand-in torch in `work`."""
    return ["--find-links", str(work), "--constraint", str(work / "constraints.txt")]


def download(dest: Path, python: str, work: Path, has: tuple[str, ...]) -> list[str]:
    """Every wheel the check needs for `python` on manylinux x86_64 into `dest`, but torch's and `has`;
    returns the names of ours."""
    ours = build_ours(work / "ours")
    stand_in_torch(work)
    abi = "cp" + python.replace(".", "")
    platforms = [arg for tag in PLATFORMS for arg in ("--platform", tag)]
    roots = [f"{name} @ {wheel.as_uri()}" for name, wheel in ours.items() if name != "ccapo"]
    roots += [r for r in requirements() if name_of(r) not in OURS]
    pip(
        "download", "--dest", str(dest), "--only-binary=:all:", "--python-version", python,
        "--implementation", "cp", "--abi", abi, "--abi", "abi3", "--abi", "none", *platforms, *resolving(work), *roots,
    )  # fmt: skip
    shutil.copy2(ours["ccapo"], dest)
    drop = {name.replace("-", "_") for name in (*WITH_TORCH, *has)}
    for wheel in dest.glob("*.whl"):
        if NEVER.match(wheel.name.split("-")[0]) or wheel.name.split("-")[0].lower() in drop:
            wheel.unlink()
    return sorted(wheel.name for wheel in ours.values())


def copy_tokenizer(dest: Path, source: Path | None) -> None:
    """The default model's tokenizer files (the converted model's folder, without its weights)."""
    if source is None:
        from ccapo.models import ensure_default_model

        source = ensure_default_model()
    target = dest / TOKENIZER
    target.mkdir()
    for file in source.iterdir():
        if file.is_file() and file.suffix not in (".safetensors", ".bin", ".gguf", ".pt"):
            shutil.copy2(file, target / file.name)
    if not (target / "tokenizer_config.json").is_file():
        raise BundleError(f"{source} holds no tokenizer_config.json: pass --tokenizer DIR")


def write_problems(dest: Path) -> None:
    """GSM-style problems with gold solutions, as `ccapo.gsm` generates them (seed 0), one JSON object a line."""
    from ccapo.gsm import gsm_symbolic_problems

    rows = [json.dumps(dataclasses.asdict(problem)) for problem in gsm_symbolic_problems(PROBLEM_COUNT, 0)]
    (dest / PROBLEMS).write_text("\n".join(rows) + "\n")


def build(dest: Path, python: str, limit_mib: float, has: tuple[str, ...], tokenizer: Path | None = None) -> dict:
    """The bundle in `dest` (replaced whole); its manifest. Raises BundleError if over `limit_mib`."""
    staging = Path(tempfile.mkdtemp(prefix=".gpu-bundle-", dir=dest.parent))
    try:
        with tempfile.TemporaryDirectory() as work:
            ours = download(staging, python, Path(work), has)
        copy_tokenizer(staging, tokenizer)
        write_problems(staging)
        (staging / REQUIREMENTS).write_text(
            "# `pip install --no-index --find-links <this folder> -r requirements.txt`, then the ccapo wheel with\n"
            "# --no-deps: the core asks for a newer torch than a lent machine may have, and the check runs on that.\n"
            + "\n".join(requirements())
            + "\n"
        )
        files = {str(f.relative_to(staging)): f.stat().st_size for f in sorted(staging.rglob("*")) if f.is_file()}
        left_out = {**LEFT_OUT, **dict.fromkeys(WITH_TORCH, "comes with torch")}
        left_out |= dict.fromkeys(has, "the GPU machine has it")
        manifest = {"python": python, "ours": ours, "requirements": requirements(), "left_out": left_out}
        (staging / MANIFEST).write_text(json.dumps({**manifest, "files": files}, indent=1) + "\n")
        total = sum(f.stat().st_size for f in staging.rglob("*") if f.is_file())
        if total > limit_mib * 2**20:
            largest = sorted(files.items(), key=lambda item: -item[1])[:8]
            raise BundleError(
                f"the bundle is {total / 2**20:.1f} MiB, over {limit_mib} MiB; largest: "
                + ", ".join(f"{name} {size / 2**20:.1f} MiB" for name, size in largest)
            )
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
        return {**manifest, "files": files, "bytes": total}
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", type=Path, default=ROOT / "gpu-bundle")
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python (default 3.12)")
    parser.add_argument("--limit-mib", type=float, default=LIMIT_MIB)
    parser.add_argument("--tokenizer", type=Path, help="a tokenizer folder (default: the default model's)")
    parser.add_argument(
        "--has", nargs="*", default=list(MACHINE_HAS), metavar="NAME",
        help=f"packages the target machine has, left out (default: {' '.join(MACHINE_HAS)}; none: --has)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.dest.parent.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))  # this checkout's ccapo, for the tokenizer and the problems
    try:
        manifest = build(args.dest.resolve(), args.python_version, args.limit_mib, tuple(args.has), args.tokenizer)
    except BundleError as error:
        print(f"gpu_bundle: {error}", file=sys.stderr)
        return 1
    wheels = [name for name in manifest["files"] if name.endswith(".whl")]
    print(f"{args.dest}: {manifest['bytes'] / 2**20:.1f} MiB, {len(wheels)} wheels for Python {args.python_version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
