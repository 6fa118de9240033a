"""The suite's own shape, which keeps its time budget visible (Makefile: main suite under 9 min on 2 cores).

Slow tests run last and stay few, every suite `make test` runs prints its slowest tests, and CI times
each of those suites as a stage of its own (and builds the documentation site once, in the main suite).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Tests that take a minute or more each; a new one must fit the budget (merge it into an existing slow path).
# (The Dockerfile replay is `make test-install`'s, not the main suite's.)
SLOW_BUDGET = 10


def makefile_rule(target: str) -> tuple[list[str], str]:
    """The prerequisites and recipe of one Makefile rule."""
    text = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:(.*)\n((?:\t.*\n|.*\\\n)*)", text, re.MULTILINE)
    assert match, f"the Makefile has no {target!r} rule"
    return match.group(1).split(), match.group(2)


def test_slow_tests_run_after_every_fast_one(request: pytest.FixtureRequest) -> None:
    slow = [item.get_closest_marker("slow") is not None for item in request.session.items]
    assert slow == sorted(slow), "tests/conftest.py's pytest_collection_modifyitems must move `slow` tests last"


def test_slow_tests_stay_within_the_budget(request: pytest.FixtureRequest) -> None:
    config = request.config
    if config.args_source != pytest.Config.ArgsSource.TESTPATHS or config.option.keyword or config.option.markexpr:
        pytest.skip("counts the slow tests of the whole suite (`pytest` with no arguments); this run selected part")
    slow = [item.nodeid for item in request.session.items if item.get_closest_marker("slow")]
    assert len(slow) <= SLOW_BUDGET, f"{len(slow)} slow tests (budget {SLOW_BUDGET}): {slow}"


def test_make_test_runs_every_suite_printing_its_slowest_tests() -> None:
    suites, _ = makefile_rule("test")
    assert suites[0] == "lint" and {"test-main", "test-verl", "test-openrlhf"} <= set(suites)
    for suite in suites[1:]:
        _, recipe = makefile_rule(suite)
        assert "-m pytest" in recipe and "--durations=15" in recipe, suite


def test_ci_times_each_stage_of_make_test() -> None:
    """Only those stages: the documentation site is built by the main suite, not a second time in CI."""
    script = (ROOT / ".ci" / "run").read_text()
    staged = re.findall(r"^\s*stage \S+ make (\S+)", script, re.MULTILINE)
    suites, _ = makefile_rule("test")
    assert staged[0] == "setup-all" and staged[1:] == suites, staged


def test_the_main_suite_builds_the_site_as_make_docs_does() -> None:
    """`make docs` stays for users; CI relies on tests/docs/test_site.py's build failing as --strict fails."""
    _, recipe = makefile_rule("docs")
    assert "mkdocs build --strict" in recipe
    assert '"--strict"' in (ROOT / "tests" / "docs" / "test_site.py").read_text()


def test_tests_sharing_costly_state_run_on_one_worker(request: pytest.FixtureRequest) -> None:
    """pytest-xdist's work units (tests/conftest.py): one per test, unless the tests share state."""
    work_unit = request.config.pluginmanager.getplugin(str(ROOT / "tests" / "conftest.py")).work_unit
    assert work_unit("tests/ray/test_ray_cli.py::test_a") == work_unit("tests/ray/test_ray_serve.py::test_b") == "ray"
    assert work_unit("tests/trainer/testbed/test_experiment.py::test_a[1]") == "testbed"
    server = "tests/server/test_abuse.py"
    assert work_unit(f"{server}::test_a") == work_unit(f"{server}::test_b[p]") == server
    assert work_unit("tests/docs/test_site.py::test_a") == "tests/docs/test_site.py"
    image = "tests/deploy/test_dockerfile.py"
    assert work_unit(f"{image}::test_a[serve]") == work_unit(f"{image}::test_a[train]") == image
    assert work_unit("tests/docs/test_doc_blocks.py::test_a[b]") == "tests/docs/test_doc_blocks.py::test_a[b]"
    assert work_unit("tests/core/test_engine.py::test_a[llama]") == "tests/core/test_engine.py::test_a[llama]"
