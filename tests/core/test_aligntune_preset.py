"""The "aligntune" preset's rules on the real tokenizer, and arithmetic operators in the default path.

tests/paper holds the preset to the authors' package itself (its own environment); these tests
pin the rules that matter most in the main suite, with a tiny random model where a model is needed.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ccapo import Scorer, ScoringConfig
from ccapo.aligntune import detect_spans, plan
from ccapo.weights import WeightConfig


# The authors' rules act on SmolLM2's real BPE pieces (a lone " *", the newline token): the real tokenizer.
@pytest.fixture(scope="module")
def tokenizer(smollm_tokenizer):
    return smollm_tokenizer


@pytest.fixture(scope="module")
def llama(smollm_llama):
    return smollm_llama

PRESET = ScoringConfig(preset="aligntune")


def pieces(tokenizer, text: str) -> list[str]:
    return [tokenizer.decode([t]) for t in tokenizer(text, add_special_tokens=False).input_ids]


def spans_text(tokenizer, text: str, kind: str | None = None) -> list[str]:
    p = pieces(tokenizer, text)
    spans = detect_spans(p, "<|im_end|>", 10, 5, 50)
    return ["".join(p[s.start : s.end]) for s in spans if kind in (None, s.kind)]


def test_the_preset_fixes_the_authors_rules_and_defaults_to_their_mapping() -> None:
    assert (PRESET.segmenter, PRESET.intervention, PRESET.placeholder, PRESET.weights.scheme) == (
        "calc", "pad", None, "paper",
    )
    assert ScoringConfig(preset="aligntune", weights={"scheme": "inverted"}).weights.scheme == "inverted"
    assert ScoringConfig(preset="aligntune", weights=WeightConfig(boost=3.0)).weights.scheme == "paper"
    assert ScoringConfig.model_validate(PRESET.model_dump()) == PRESET
    with pytest.raises(ValidationError, match=r"fixes intervention to 'pad'.*remove intervention"):
        ScoringConfig(preset="aligntune", intervention="delete")
    with pytest.raises(ValidationError, match="fixes segmenter"):
        ScoringConfig(preset="aligntune", segmenter="sentence")


def test_the_authors_segmenter_as_their_code_runs_it(tokenizer) -> None:
    # A single line break never ends a sentence: unpunctuated lines stay one candidate (and > 50 tokens: none).
    lines = "".join(f"Then the count goes up by one more item number {k}\n" for k in range(8))
    assert spans_text(tokenizer, lines + "#### 8") == []
    # The "." of a decimal ends a sentence ("5 dollars today." is then under 5 tokens); the next
    # sentence starts with the line break.
    assert spans_text(tokenizer, "The price per pound is 2.5 dollars today.\nSo we pay that much in all.\n#### 5") == [
        "The price per pound is 2.", "\nSo we pay that much in all.",
    ]
    # "x" is no operator of theirs (their class holds single letters of "times" and "div" instead).
    assert spans_text(tokenizer, "He buys 4 x 3 = 12 eggs.\n#### 12", "calc") == []
    assert spans_text(tokenizer, "He buys 4 s 3 = 12 eggs for the whole week ahead.\n#### 12", "calc") == [
        "4 s 3 = 12"
    ]


def test_the_answer_window_prefers_final_answer_and_its_first_occurrence(tokenizer) -> None:
    text = "We get 3 + 4 = 7 here.\n#### 7\nFinal answer: 7 and the final answer is 7"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    p = plan(tokenizer, ids, PRESET)
    assert (p.marker, "".join(pieces(tokenizer, text)[p.reasoning_end :]).startswith("Final answer")) == (
        "final answer", True,
    )


def test_the_preset_scores_the_authors_window_with_the_pad_id(llama, tokenizer) -> None:
    scorer = Scorer(llama, tokenizer)
    completion = "First 3 + 4 = 7 apples are here now.\nThen we add 7 + 5 = 12 more.\n#### 12"
    ids = [*tokenizer(completion, add_special_tokens=False).input_ids, tokenizer.eos_token_id]
    trace = {"prompt_ids": [1, 2, 3], "completion_ids": ids}
    [prepared] = scorer.prepare([trace], PRESET)
    p = prepared.plan
    assert prepared.job.placeholder == tokenizer.pad_token_id  # <|im_end|>: theirs, not ccapo's " "
    assert prepared.job.ids == [1, 2, 3, *ids]  # the end-of-turn token is part of the scored window
    assert prepared.job.answer_start == 3 + p.reasoning_end + 1  # the marker token is not scored
    [result] = scorer.score([trace], PRESET)
    assert result.token_weights[-1] == 1.0 and result.token_weights[p.reasoning_end] == 1.5
    # No marker: unscorable, with the weights their code gives such a trace: flat importance 0.5 (2.25,
    # " =" a tenth of it) up to the last token, which is their answer window (0 -> min_weight 0.5).
    [bare] = scorer.score([{"prompt_ids": [1, 2], "completion_ids": ids[:8]}], PRESET)
    assert bare.status == "unscorable" and bare.token_weights == pytest.approx([2.25] * 6 + [0.675, 0.5])


@pytest.mark.parametrize("operator", ["*", "-", "="])
def test_an_operator_inside_a_calculation_keeps_its_spans_weight(llama, tokenizer, operator) -> None:
    """The default path: `*`, `-` and `=` inside an arithmetic span are operators, never formatting."""
    completion = f"So the shop has 9 {operator} 3 = 27 boxes on the shelf now.\n#### 27"
    if operator == "=":
        completion = "So the shop has 9 + 3 = 12 boxes on the shelf now.\n#### 12"
    config = ScoringConfig(segmenter="calc", intervention="pad", weights={"scheme": "paper"})
    [result] = Scorer(llama, tokenizer).score([{"prompt": "How many boxes?", "completion": completion}], config)
    [calc] = [s for s in result.spans if s.kind == "calc"]
    weights = result.token_weights[calc.token_start : calc.token_end]
    tokens = result.tokens[calc.token_start : calc.token_end]
    assert f" {operator}" in tokens, tokens
    assert weights == pytest.approx([weights[0]] * len(weights)), list(zip(tokens, weights, strict=True))
