"""An in-process scorer of the tiny llama, for the adapter tests."""

from __future__ import annotations

import pytest
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ccapo import Scorer


@pytest.fixture(scope="session")
def scorer(llama: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> Scorer:
    """The tiny llama scoring in-process; the `server_url` fixture serves the same weights."""
    return Scorer(llama, tokenizer)
