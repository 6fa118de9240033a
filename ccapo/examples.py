"""Bundled example traces: worked GSM8K-style solutions to score without any dataset."""

from __future__ import annotations

import json
from importlib import resources

from ccapo.trace import Trace


def load_examples() -> list[Trace]:
    """The example traces shipped in `ccapo/data/examples.jsonl`, one JSON trace per line."""
    text = (resources.files("ccapo") / "data" / "examples.jsonl").read_text(encoding="utf-8")
    return [Trace(**json.loads(line)) for line in text.splitlines() if line.strip()]
