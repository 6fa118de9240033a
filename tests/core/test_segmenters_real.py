"""Segmenters on real gsm_symbolic solutions under the real tokenizer."""

from __future__ import annotations

import itertools
import re

import pytest

from ccapo.answer import find_answer
from ccapo.gsm import gsm_symbolic_problems
from ccapo.spans import char_range_to_tokens, segment

ARITHMETIC = re.compile(
    r"^[$€£¥]?[\d.,]+%?( [a-z/]+)?(\s*[-+x*/×÷]\s*[$€£¥]?[\d.,]+%?( [a-z/]+)?)+\s*=\s*[$€£¥]?[\d.,]+%?$"
)


@pytest.fixture(scope="module")
def tokenizer(smollm_tokenizer):
    """SmolLM2's real BPE: the segmenters on the token boundaries a real model sees."""
    return smollm_tokenizer


@pytest.fixture(scope="module")
def solutions(tokenizer):
    out = []
    for problem in gsm_symbolic_problems(20, seed=7):
        text = problem.solution
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        location = find_answer(text)
        reasoning = char_range_to_tokens(enc.offset_mapping, location.start, location.end)[0]
        out.append((text, [tuple(o) for o in enc.offset_mapping], reasoning))
    return out


@pytest.mark.parametrize("segmenter", ["calc", "sentence", "line", "window"])
@pytest.mark.parametrize("max_spans", [4, 10])
def test_limits_hold(solutions, segmenter, max_spans):
    for text, offsets, reasoning in solutions:
        spans = segment(text, offsets, reasoning, segmenter, max_spans=max_spans)
        assert 0 < len(spans) <= max_spans
        assert all(0 <= s.token_start < s.token_end <= reasoning for s in spans)
        assert all(a.token_end <= b.token_start for a, b in itertools.pairwise(spans))  # sorted, disjoint
        if segmenter != "window":
            assert all(s.n_tokens <= 50 for s in spans)
        if segmenter in ("sentence", "line"):
            assert all(s.n_tokens >= 5 for s in spans)


def test_calc_spans_are_the_arithmetic_expressions(solutions):
    for text, offsets, reasoning in solutions:
        spans = segment(text, offsets, reasoning, "calc")
        calc = [s for s in spans if s.kind == "calc"]
        assert 1 <= len(calc) <= 5
        for span in calc:
            assert ARITHMETIC.match(text[span.start : span.end].strip()), text[span.start : span.end]
