"""One trace's token weights from every place a weight is produced, under one scoring config: the library,
`ccapo score`, the scoring server over HTTP, `ccapo train`'s provider and a remote RL adapter."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import httpx
from ccapo_adapters import CounterfactualConfig, WeightProvider
from ccapo_trainer.config import TrainConfig
from ccapo_trainer.weighting import weight_provider
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ccapo import Scorer, ScoringConfig, TraceImportance
from ccapo.cli import main as ccapo_main


def weights_everywhere(
    trace: dict[str, list[int]],
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    model_dir: str,
    server_url: str,
    tmp_path: Path,
    scoring: dict[str, Any] | None = None,
    cli_flags: tuple[str, ...] = (),
) -> tuple[TraceImportance, dict[str, list[float]]]:
    """The library's result under `scoring` (None: nothing set), and the weights each other entry point
    gives for the same token ids. `cli_flags` say the same as `scoring` on the command line."""
    counterfactual = CounterfactualConfig(scoring=scoring or {})
    library = Scorer(model, tokenizer).score([trace], ScoringConfig.model_validate(counterfactual.scoring_config()))[0]

    traces, scored = tmp_path / "traces.jsonl", tmp_path / "scored.jsonl"
    traces.write_text(json.dumps(trace) + "\n")
    assert ccapo_main(["score", str(traces), "--model", model_dir, *cli_flags, "-o", str(scored)]) == 0
    cli = json.loads(scored.read_text())["token_weights"]

    body = {"traces": [trace], **({"config": scoring} if scoring else {})}
    http = httpx.post(f"{server_url}/v1/importance", json=body, timeout=60).raise_for_status().json()

    rows = ([trace["prompt_ids"]], [trace["completion_ids"]])
    train = TrainConfig.model_validate({"counterfactual": {"scoring": scoring or {}}})
    trainer = weight_provider(train, model, tokenizer).weights(*rows).weights[0].tolist()
    with warnings.catch_warnings():  # the remote adapter warns that nothing syncs its scorer: not the point here
        warnings.simplefilter("ignore")
        remote = CounterfactualConfig(provider="remote", server_url=server_url, scoring=scoring or {})
        adapter = WeightProvider.create(remote).weights(*rows).weights[0].tolist()
    return library, {
        "cli": cli,
        "http": http["results"][0]["token_weights"],
        "trainer": trainer,
        "adapter": adapter,
    }
