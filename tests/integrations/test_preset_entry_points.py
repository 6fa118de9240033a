"""The "aligntune" preset reaches the scorer from every entry point: `ccapo score --preset`, a request to the
server over HTTP, `ccapo train`'s provider and a remote adapter give the library's preset weights.

tests/paper holds those weights to the authors' own code; here, that every path carries the preset
through rather than falling back on ccapo's own rules (whose weights differ on the same trace).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ccapo_adapters.config import CounterfactualConfig
from ccapo_trainer.config import load_config
from every_entry_point import weights_everywhere

from ccapo import Scorer, ScoringConfig
from ccapo.aligntune import plan

PROMPT = "A box holds 12 muffins. How many muffins are in 11 boxes?"
COMPLETION = "Let me think about the boxes first.\nEach box holds 12, so 11 * 12 = 132 muffins.\n#### 132"
OWN_RULES = {"segmenter": "calc", "intervention": "pad", "weights": {"scheme": "paper"}}


def test_every_entry_point_gives_the_presets_weights(llama, tokenizer, tiny_model_dir, server_url, tmp_path: Path):
    trace = {
        "prompt_ids": tokenizer(PROMPT).input_ids,
        "completion_ids": [*tokenizer(COMPLETION, add_special_tokens=False).input_ids, tokenizer.eos_token_id],
    }
    scoring = {"preset": "aligntune"}
    library, elsewhere = weights_everywhere(
        trace, llama, tokenizer, tiny_model_dir, server_url, tmp_path, scoring, ("--preset", "aligntune")
    )
    authors = plan(tokenizer, trace["completion_ids"], ScoringConfig(preset="aligntune"))
    spans = [(s.token_start, s.token_end) for s in library.spans]
    assert library.status == "ok" and spans == [(s.start, s.end) for s in authors.spans]
    assert library.token_weights[-1] == 1.0  # the end-of-turn token, scored and weighted as theirs is
    own_rules = Scorer(llama, tokenizer).score([trace], OWN_RULES)[0]
    assert own_rules.token_weights != pytest.approx(library.token_weights, abs=1e-3)
    for name, weights in elsewhere.items():
        assert weights == pytest.approx(library.token_weights, abs=1e-4), name


def test_the_adapters_and_the_trainer_keep_the_authors_scheme_unless_told() -> None:
    adapter = CounterfactualConfig(scoring={"preset": "aligntune"})
    assert ScoringConfig.model_validate(adapter.scoring_config()) == ScoringConfig(preset="aligntune")
    inverted = CounterfactualConfig(weighting="inverted", scoring={"preset": "aligntune"})
    assert ScoringConfig.model_validate(inverted.scoring_config()).weights.scheme == "inverted"
    train = load_config(None, ["counterfactual.scoring.preset=aligntune"])
    assert ScoringConfig.model_validate(train.counterfactual.scoring_config()) == ScoringConfig(preset="aligntune")
