"""Save the test suite's tiny random llama, with the default model's real tokenizer, to a directory.

Run by the main environment's Python (it needs ccapo for the bundled tokenizer): the verl and
OpenRLHF environments cannot install ccapo, so their tests have the main environment write the
checkpoint their scoring server serves.

    .venv/bin/python clients/adapters/tests/save_tiny_model.py DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))

from tiny_models import tiny_model
from transformers import AutoTokenizer

from ccapo.models import ensure_default_model


def main(path: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(ensure_default_model())
    model = tiny_model("llama", len(tokenizer))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


if __name__ == "__main__":
    main(sys.argv[1])
