"""Caller-given char spans under the real tokenizer: adjacent spans share no token, and a token
straddling their boundary goes to exactly one of them (ccapo.spans.STRADDLE_RULE)."""

from __future__ import annotations

import re
from itertools import pairwise

import pytest

from ccapo import Scorer, Trace, TraceError
from ccapo.spans import TokenSpan, custom_spans

INDENTED = "To water the flower bed:\n   - Each plant needs 2 liters\n   - There are 7 plants\n#### 14"
CRLF = "First line here.\r\n  Second line indented.\r\n#### 3"
IN_WORD = "The multiplication gives 35 #### 35"


@pytest.fixture(scope="module")
def tokenizer(smollm_tokenizer):
    """SmolLM2's real BPE: how its tokens straddle lines and words is what these tests are about."""
    return smollm_tokenizer


@pytest.fixture(scope="module")
def scorer(smollm_llama, tokenizer) -> Scorer:
    return Scorer(smollm_llama, tokenizer)


def tokenize(tokenizer, text: str) -> tuple[list[str], list[tuple[int, int]]]:
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [tuple(o) for o in encoded.offset_mapping]
    return [text[a:b] for a, b in offsets], offsets


def line_ranges(text: str) -> list[tuple[int, int]]:
    """Each line from its first character (indentation included) through its line end."""
    return [m.span() for m in re.finditer(r"[^\n]*\n", text)]


def reasoning_end(tokens: list[str]) -> int:
    return next(i for i, t in enumerate(tokens) if "####" in t)


def owner_of(spans: list[TokenSpan], token: int) -> list[int]:
    return [k for k, s in enumerate(spans) if s.token_start <= token < s.token_end]


def test_indented_lines_split_the_newline_token_by_its_first_character(tokenizer):
    tokens, offsets = tokenize(tokenizer, INDENTED)
    ranges = line_ranges(INDENTED)[:3]
    spans = custom_spans(INDENTED, offsets, reasoning_end(tokens), ranges, by_tokens=False)
    # The tokenizer glues the line end to the next line's indent: "\n  " straddles the boundary.
    straddler = tokens.index("\n  ")
    assert offsets[straddler][0] < ranges[1][0] < offsets[straddler][1]
    assert owner_of(spans, straddler) == [0]  # all whitespace: it goes by its first character, "\n"
    assert [s.token_end for s in spans[:-1]] == [s.token_start for s in spans[1:]]  # adjacent, disjoint
    assert tokens[spans[1].token_start] == " -"


def test_crlf_line_ends_stay_with_the_line_they_end(tokenizer):
    tokens, offsets = tokenize(tokenizer, CRLF)
    end = reasoning_end(tokens)
    after_lf = CRLF.index("\n") + 1
    for boundary in (after_lf, after_lf - 1):  # after "\r\n", and between "\r" and "\n"
        spans = custom_spans(CRLF, offsets, end, [(0, boundary), (boundary, offsets[end][0])], by_tokens=False)
        straddler = tokens.index("\r\n ")
        assert owner_of(spans, straddler) == [0]
        assert spans[0].token_end == spans[1].token_start == straddler + 1
        assert spans[1].token_end == end


def test_a_boundary_inside_a_word_gives_the_word_to_the_span_holding_its_first_letter(tokenizer):
    tokens, offsets = tokenize(tokenizer, IN_WORD)
    word = tokens.index(" multiplication")
    inside = offsets[word][0] + 7  # " multip|lication"
    end = reasoning_end(tokens)
    spans = custom_spans(IN_WORD, offsets, end, [(0, inside), (inside, 27)], by_tokens=False)
    assert owner_of(spans, word) == [0]
    assert (spans[0].token_end, spans[1].token_start) == (word + 1, word + 1)
    # The first letter decides, not the larger share: a span starting at the word's first letter owns it.
    first_letter = offsets[word][0] + 1
    spans = custom_spans(IN_WORD, offsets, end, [(0, first_letter), (first_letter, 27)], by_tokens=False)
    assert owner_of(spans, word) == [1]


def test_scoring_adjacent_line_spans_succeeds(scorer):
    ranges = line_ranges(INDENTED)[:3]
    (result,) = scorer.score([Trace(prompt="How much water?", completion=INDENTED, spans=ranges)])
    assert result.status == "ok"
    assert [s.kind for s in result.spans] == ["custom"] * 3
    assert all(a.token_end == b.token_start for a, b in pairwise(result.spans))


def test_a_span_left_without_tokens_names_the_trace_and_the_span(scorer, tokenizer):
    tokens, offsets = tokenize(tokenizer, IN_WORD)
    word = tokens.index(" multiplication")
    inside, word_end = offsets[word][0] + 7, offsets[word][1]
    good = Trace(prompt="Q", completion=IN_WORD)
    bad = Trace(prompt="Q", completion=IN_WORD, spans=[(0, inside), (inside, word_end)])
    with pytest.raises(TraceError) as info:
        scorer.score([good, bad])
    assert info.value.trace_index == 1
    message = str(info.value)
    assert message.startswith("trace 1: custom span ")
    assert f"({inside}, {word_end}) {IN_WORD[inside:word_end]!r} keeps no token" in message
    assert "first non-whitespace character" in message


def test_overlapping_spans_are_an_error_that_quotes_both(scorer):
    bad = Trace(prompt="Q", completion=INDENTED, spans=[(30, 40), (0, 35)])
    with pytest.raises(TraceError) as info:
        scorer.score([bad])
    message = str(info.value)
    assert "custom spans (0, 35) and (30, 40) overlap on chars [30, 35)" in message
    assert repr(INDENTED[0:35]) in message and repr(INDENTED[30:40]) in message
