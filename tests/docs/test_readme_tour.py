"""README's "A 30-second tour" runs as written, on the real default model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.slow
def test_the_tour_runs_as_written(default_model_dir: str) -> None:
    tour = README.read_text(encoding="utf-8").split("## A 30-second tour", 1)[1]
    code = re.search(r"```python\n(.*?)```", tour, re.DOTALL).group(1)
    namespace: dict = {}
    exec(compile(code, "README tour", "exec"), namespace)  # the snippet as a reader pastes it
    results = namespace["results"]
    assert [r.status for r in results] == ["ok", "ok"]
    completion_ids = namespace["tokenize"]("3 + 4 = 7 apples.\n#### 7", add_special_tokens=False).input_ids
    assert len(results[1].token_weights) == len(completion_ids)  # one weight per given token
