"""One default weighting wherever a weight is produced: the library, `ccapo score`, the scoring server,
`ccapo train`'s provider and an RL adapter give one trace the same token weights when nothing about the
weighting is set, and those weights are the training scheme's (mean 1), not the paper's.

Cost: the tiny llama scores one trace five ways, a few seconds beside the shared server and model
fixtures (`ccapo score` loads the model itself).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import httpx
import pytest
from ccapo_adapters import CounterfactualConfig, WeightProvider
from ccapo_adapters.config import DEFAULT_SCHEME
from ccapo_trainer.config import TrainConfig
from ccapo_trainer.weighting import weight_provider

from ccapo import Scorer, ScoringConfig, WeightConfig
from ccapo.cli import main as ccapo_main

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
    library = Scorer(llama, tokenizer).score([trace])[0]
    assert library.status == "ok" and library.spans

    traces, scored = tmp_path / "traces.jsonl", tmp_path / "scored.jsonl"
    traces.write_text(json.dumps(trace) + "\n")
    assert ccapo_main(["score", str(traces), "--model", tiny_model_dir, "-o", str(scored)]) == 0
    cli = json.loads(scored.read_text())["token_weights"]

    response = httpx.post(f"{server_url}/v1/importance", json={"traces": [trace]}, timeout=60)
    http = response.raise_for_status().json()["results"][0]["token_weights"]

    rows = ([trace["prompt_ids"]], [trace["completion_ids"]])
    trainer = weight_provider(TrainConfig(), llama, tokenizer).weights(*rows).weights[0].tolist()
    with warnings.catch_warnings():  # the remote adapter warns that nothing syncs its scorer: not the point here
        warnings.simplefilter("ignore")
        adapter_provider = WeightProvider.create(CounterfactualConfig(provider="remote", server_url=server_url))
    adapter = adapter_provider.weights(*rows).weights[0].tolist()

    expected = library.token_weights
    assert sum(expected) / len(expected) == pytest.approx(1.0)  # the training scheme: mean 1
    assert max(expected) > min(expected)  # and the trace's spans moved the weights
    for name, weights in {"cli": cli, "http": http, "trainer": trainer, "adapter": adapter}.items():
        assert weights == pytest.approx(expected, abs=1e-4), name
