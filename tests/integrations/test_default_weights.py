"""One default weighting wherever a weight is produced: the library, `ccapo score`, the scoring server,
`ccapo train`'s provider and an RL adapter give one trace the same token weights when nothing about the
weighting is set, and those weights are the training scheme's (mean 1), not the paper's.

Cost: the tiny llama scores one trace five ways, a few seconds beside the shared server and model
fixtures (`ccapo score` loads the model itself).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ccapo_adapters import CounterfactualConfig
from ccapo_adapters.config import DEFAULT_SCHEME
from ccapo_trainer.config import TrainConfig
from every_entry_point import weights_everywhere

from ccapo import ScoringConfig, WeightConfig

PROMPT = "A box holds 12 muffins. How many muffins are in 11 boxes?"
COMPLETION = "Let me think about the boxes.\nEach box holds 12, so 11 × 12 = 132 muffins.\n#### 132"


@pytest.fixture(scope="module")
def trace(tokenizer) -> dict[str, list[int]]:
    """Token ids, as an RL stack holds them, so every path scores exactly the same tokens."""
    return {
        "prompt_ids": tokenizer(PROMPT).input_ids,
        "completion_ids": tokenizer(COMPLETION, add_special_tokens=False).input_ids,
    }


def test_the_default_scheme_is_the_training_one_everywhere():
    assert WeightConfig().scheme == ScoringConfig().weights.scheme == DEFAULT_SCHEME == "normalized"
    assert CounterfactualConfig().weight_scheme == TrainConfig().counterfactual.weight_scheme == DEFAULT_SCHEME


def test_library_cli_server_trainer_and_adapter_give_the_same_default_weights(
    trace, llama, tokenizer, tiny_model_dir: str, server_url: str, tmp_path: Path
):
    library, elsewhere = weights_everywhere(trace, llama, tokenizer, tiny_model_dir, server_url, tmp_path)
    assert library.status == "ok" and library.spans
    expected = library.token_weights
    assert sum(expected) / len(expected) == pytest.approx(1.0)  # the training scheme: mean 1
    assert max(expected) > min(expected)  # and the trace's spans moved the weights
    for name, weights in elsewhere.items():
        assert weights == pytest.approx(expected, abs=1e-4), name
