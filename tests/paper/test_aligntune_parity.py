"""The "aligntune" preset against the authors' released code, on the same token ids (`make test-paper`).

Runs in .venv-aligntune (`make aligntune-env`: aligntune 0.1.28 without its dependencies, plus what
its functions import); elsewhere the module skips. A tiny random Llama with the default model's real
tokenizer (SmolLM2's: the segmenter and markers work on its token strings) scores ten traces (the
bundled examples; gold gsm_symbolic solutions with single line breaks, decimals, `%`, `x`, `*` and
`\\boxed`), each with and without the end-of-turn token, on both
sides: the authors' `compute_batched_counterfactual_importance` + `compute_soft_weights` (and, for
the inverted control, their one-trace `compute_counterfactual_importance(invert_mode=True)`), and
ccapo's preset. Spans and answer starts must be identical, drops and weights within 1e-4.

Why tiny: the authors' code runs a full forward pass and a full-vocabulary log-softmax per span, so
the real 135M model needs about 5 CPU-minutes for the 20 rows on each side, against a stage budget
of about 2. Its weights are drawn wide (initializer_range 0.3) so that drops are several nats, as
on a trained model, not near zero. `bench/paper_parity.py` runs the same comparison on the real
model (the table in docs/method.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

custom_trainer = pytest.importorskip(
    "aligntune.backends.trl.rl.counterfact_grpo.custom_trainer", reason="needs aligntune: make aligntune-env"
)

import torch  # noqa: E402
from tiny_models import TINY  # noqa: E402
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM  # noqa: E402

from bench import paper_rules  # noqa: E402
from bench.paper_parity import AUTHORS_WEIGHTS, IdTrace, authors, ccapo_side, parity_traces  # noqa: E402
from ccapo import Scorer, ScoringConfig  # noqa: E402
from ccapo.models import ensure_default_model  # noqa: E402

TOLERANCE = 1e-4
PRESET = ScoringConfig(preset="aligntune")


@pytest.fixture(scope="module")
def setup() -> tuple[Any, Any, list[IdTrace], Scorer]:
    tokenizer = AutoTokenizer.from_pretrained(ensure_default_model())
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), initializer_range=0.3, **TINY)).eval()
    return model, tokenizer, parity_traces(tokenizer), Scorer(model, tokenizer)


def test_the_preset_reproduces_the_authors_spans_drops_and_weights(setup) -> None:
    model, tokenizer, traces, scorer = setup
    ours = ccapo_side(scorer, traces, PRESET)
    probed = 0
    for trace, mine in zip(traces, ours, strict=True):
        theirs = authors(custom_trainer, model, tokenizer, trace)
        assert mine.spans == theirs.spans, trace.name
        assert mine.answer_start == theirs.answer_start, trace.name
        np.testing.assert_allclose(mine.drops, theirs.drops, atol=TOLERANCE, err_msg=trace.name)
        np.testing.assert_allclose(mine.weights, theirs.weights, atol=TOLERANCE, err_msg=trace.name)
        probed += bool(theirs.spans)
    # Single-line-break traces without arithmetic get no span from their segmenter (one sentence over 50
    # tokens); the rest must probe spans, or the drops are hardly compared.
    assert probed >= len(traces) - 4, probed


def test_the_inverted_control_is_the_authors_inverted_mode(setup) -> None:
    model, tokenizer, traces, scorer = setup
    picked = traces[:4]  # two examples, each without and with end of turn: their inverted path runs one row per pass
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


def test_one_rule_at_a_time_recombines_both_sides(setup) -> None:
    """bench/paper_rules.py: with no rule swapped it is the preset, with all four ccapo's own rules, and a
    row that swaps the segmenter probes ccapo's spans (its table in docs/method.md rests on this)."""
    _, _, traces, scorer = setup
    picked = traces[:6]
    mixed = paper_rules.rows(scorer, [t.as_trace() for t in picked])
    for name, config in ((paper_rules.PRESET_ROW, PRESET), (paper_rules.ALL_OURS, paper_rules.OURS)):
        for row, direct in zip(mixed[name], ccapo_side(scorer, picked, config), strict=True):
            assert row.spans == direct.spans, name
            np.testing.assert_allclose(row.drops, direct.drops, atol=TOLERANCE, err_msg=name)
            np.testing.assert_allclose(row.weights, direct.weights, atol=TOLERANCE, err_msg=name)
    ours = ccapo_side(scorer, picked, paper_rules.OURS)
    assert [row.spans for row in mixed["the segmenter"]] == [o.spans for o in ours]
    assert any(a.spans != b.spans for a, b in zip(ours, mixed[paper_rules.PRESET_ROW], strict=True))
    assert [row.spans for row in mixed["the mask token"]] == [row.spans for row in mixed[paper_rules.PRESET_ROW]]
