"""The "aligntune" preset against the authors' released code, on the same token ids (`make test-paper`).

Runs in .venv-aligntune (`make aligntune-env`: aligntune 0.1.28 without its dependencies, plus what
its functions import); elsewhere the module skips. The real default model (SmolLM2-135M-Instruct)
scores ten traces (the bundled examples; gold gsm_symbolic solutions with single line breaks,
decimals, `%`, `x`, `*` and `\\boxed`), each with and without the end-of-turn token, on both
sides: the authors' `compute_batched_counterfactual_importance` + `compute_soft_weights` (and, for
the inverted control, their one-trace `compute_counterfactual_importance(invert_mode=True)`), and
ccapo's preset. Spans and answer starts must be identical, drops and weights within 1e-4.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

custom_trainer = pytest.importorskip(
    "aligntune.backends.trl.rl.counterfact_grpo.custom_trainer", reason="needs aligntune: make aligntune-env"
)

from bench.paper_parity import AUTHORS_WEIGHTS, IdTrace, authors, ccapo_side, load, parity_traces  # noqa: E402
from ccapo import Scorer, ScoringConfig  # noqa: E402

TOLERANCE = 1e-4
PRESET = ScoringConfig(preset="aligntune")


@pytest.fixture(scope="module")
def setup() -> tuple[Any, Any, list[IdTrace], Scorer]:
    model, tokenizer = load()
    return model, tokenizer, parity_traces(tokenizer), Scorer(model, tokenizer)


def test_the_preset_reproduces_the_authors_spans_drops_and_weights(setup) -> None:
    model, tokenizer, traces, scorer = setup
    ours = ccapo_side(scorer, traces, PRESET)
    kinds = set()
    for trace, mine in zip(traces, ours, strict=True):
        theirs = authors(custom_trainer, model, tokenizer, trace)
        assert mine.spans == theirs.spans, trace.name
        assert mine.answer_start == theirs.answer_start, trace.name
        np.testing.assert_allclose(mine.drops, theirs.drops, atol=TOLERANCE, err_msg=trace.name)
        np.testing.assert_allclose(mine.weights, theirs.weights, atol=TOLERANCE, err_msg=trace.name)
        kinds.add(len(theirs.spans) > 0)
    assert kinds == {True}, "every parity trace must probe spans, or the drops are never compared"


def test_the_inverted_control_is_the_authors_inverted_mode(setup) -> None:
    model, tokenizer, traces, scorer = setup
    picked = traces[:4]  # one example without and with end of turn, two more: the inverted path costs a pass per span
    import torch

    config = ScoringConfig(preset="aligntune", weights={"scheme": "inverted"})
    for trace, mine in zip(picked, ccapo_side(scorer, picked, config), strict=True):
        prompt_len = len(trace.prompt_ids)
        ids = torch.tensor([trace.prompt_ids + trace.completion_ids])
        importance = custom_trainer.compute_counterfactual_importance(
            model, tokenizer, ids, prompt_len, max_spans=10, invert_mode=True
        )
        weights = custom_trainer.compute_soft_weights(
            importance, prompt_len, tokenizer=tokenizer, input_ids=ids, **AUTHORS_WEIGHTS
        )
        np.testing.assert_allclose(mine.weights, weights[prompt_len:], atol=TOLERANCE, err_msg=trace.name)
