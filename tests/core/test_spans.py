"""Segmenters and caller-given spans, on text plus token offsets (no tokenizer needed)."""

from __future__ import annotations

import re
from collections.abc import Callable
from itertools import pairwise

import pytest

from ccapo.answer import find_answer
from ccapo.spans import SegmenterName, TokenSpan, char_range_to_tokens, custom_spans, segment

GSM = (
    "Let's solve this step by step:\n\n1. Initial amounts:\n   • John has 35 apple\n   • He has 3 times "
    "as many kiwi, so 35 × 3 = 105 kiwi\n   • Total initial items: 105 + 35 = 140\n\n2. Bought at store:\n"
    "   • Bought 93 new apple\n   • For kiwi, bought 38 fewer than the 93 apple, so 93 - 38 = 55 kiwi\n"
    "   • Total bought items: 55 + 93 = 148\n\n3. Final amounts:\n   • Total kiwi: 105 + 55 = 160\n"
    "   • Total apple: 35 + 93 = 128\n   • Combined total: 160 + 128 = 288\n\nTherefore, John now has "
    "288 items in total.\n#### 288"
)
GSM_CALCS = [
    "35 × 3 = 105",
    "105 + 35 = 140",
    "93 - 38 = 55",
    "55 + 93 = 148",
    "105 + 55 = 160",
    "35 + 93 = 128",
    "160 + 128 = 288",
]

Tokenizer = Callable[[str], list[tuple[int, int]]]


def words(text: str) -> list[tuple[int, int]]:
    """One token per run of non-space characters; whitespace falls in the gaps."""
    return [m.span() for m in re.finditer(r"\S+", text)]


def glued(text: str) -> list[tuple[int, int]]:
    """One token per word with its leading whitespace, like BPE's " word" and "\\n   •"."""
    return [m.span() for m in re.finditer(r"\s*\S+", text)]


def chars(text: str) -> list[tuple[int, int]]:
    return [(i, i + 1) for i in range(len(text))]


def answer_token(text: str, offsets: list[tuple[int, int]]) -> int:
    """The first token of the answer region: where the reasoning ends."""
    location = find_answer(text)
    assert location is not None
    return next(i for i, (_, end) in enumerate(offsets) if end > location.start)


def texts(text: str, spans: list[TokenSpan], kind: str | None = None) -> list[str]:
    return [text[s.start : s.end] for s in spans if kind is None or s.kind == kind]


def assert_well_formed(spans: list[TokenSpan], offsets: list[tuple[int, int]], reasoning: int) -> None:
    for span in spans:
        assert 0 <= span.token_start < span.token_end <= reasoning
        assert (span.start, span.end) == (offsets[span.token_start][0], offsets[span.token_end - 1][1])
    for a, b in pairwise(spans):
        assert a.token_end <= b.token_start


def test_calc_spans_are_exactly_the_arithmetic_expressions() -> None:
    offsets = words(GSM)
    spans = segment(GSM, offsets, answer_token(GSM, offsets), "calc", max_spans=20)
    assert texts(GSM, spans, "calc") == GSM_CALCS
    # Every sentence (a line break ends one too) holding a calculation lost to it; the others
    # with at least five tokens remain.
    assert texts(GSM, spans, "sentence") == [
        "Let's solve this step by step:",
        "• John has 35 apple",
        "• Bought 93 new apple",
        "Therefore, John now has 288 items in total.",
    ]


@pytest.mark.parametrize("tokenize", [words, glued, chars])
def test_calc_limits_hold(tokenize: Tokenizer) -> None:
    offsets = tokenize(GSM)
    reasoning = answer_token(GSM, offsets)
    spans = segment(GSM, offsets, reasoning, "calc", max_spans=6, min_span_tokens=5, max_span_tokens=50)
    calcs = [s for s in spans if s.kind == "calc"]
    sentences = [s for s in spans if s.kind == "sentence"]
    assert len(spans) <= 6 and len(calcs) == 3
    assert all(5 <= s.n_tokens <= 50 for s in sentences)
    assert all(s.n_tokens <= 50 for s in spans)
    assert not any(s.token_start < c.token_end and c.token_start < s.token_end for s in sentences for c in calcs)
    assert_well_formed(spans, offsets, reasoning)


def test_calc_choice_is_spread_over_the_trace() -> None:
    offsets = words(GSM)
    spans = segment(GSM, offsets, answer_token(GSM, offsets), "calc", max_spans=10)
    # 7 arithmetic spans, budget 5: evenly spaced picks 0, 2, 3, 5, 6 (first and last included).
    assert texts(GSM, spans, "calc") == [GSM_CALCS[i] for i in (0, 2, 3, 5, 6)]


def test_calc_operator_and_number_forms() -> None:
    text = (
        "We pay $12 + $3 = $15 first. Then 2.5 \\times 4 = 10 and 50% ÷ 2 = 25% and 7 · 6 = 42, "
        "also 1,200 x 3 = 3,600 and 8 / 2 - 1 = 3 done."
    )
    offsets = chars(text)
    spans = segment(text, offsets, len(offsets), "calc", max_spans=20, min_span_tokens=1000)
    assert texts(text, spans) == [
        "$12 + $3 = $15",
        "2.5 \\times 4 = 10",
        "50% ÷ 2 = 25%",
        "7 · 6 = 42",
        "1,200 x 3 = 3,600",
        "8 / 2 - 1 = 3",
    ]
    assert all(s.n_tokens < 1000 for s in spans)  # the minimum length is for sentences only


def test_sentences_split_at_stops_and_line_breaks_but_not_decimals() -> None:
    text = (
        "It costs 2.50 dollars each day now. Then we buy three more today! Is this right for us?"
        "\n\n  A new paragraph without any stop  \nWow. Then the end"
    )
    spans = segment(text, words(text), len(words(text)), "sentence", min_span_tokens=2)
    assert texts(text, spans) == [
        "It costs 2.50 dollars each day now.",
        "Then we buy three more today!",
        "Is this right for us?",
        "A new paragraph without any stop",  # "Wow." is a single token: below min_span_tokens
        "Then the end",
    ]


def test_short_long_and_latex_heavy_sentences_are_skipped() -> None:
    long = " ".join(["word"] * 60) + "."
    latex = "We get \\alpha and \\beta and \\gamma here."  # 3 of 8 words: 37.5% > 30%
    light = "We get \\alpha and beta and gamma here."  # 1 of 8 words
    text = f"Too short. {long} {latex} {light}"
    spans = segment(text, words(text), len(words(text)), "sentence", min_span_tokens=5, max_span_tokens=50)
    assert texts(text, spans) == [light]


def test_many_candidates_are_chosen_evenly() -> None:
    text = " ".join(f"Sentence number {i} has five words." for i in range(20))
    spans = segment(text, words(text), len(words(text)), "sentence", max_spans=4)
    # int(i * 19 / 3 + 0.5) for i in 0..3: the first, the last and two between.
    assert texts(text, spans) == [f"Sentence number {i} has five words." for i in (0, 6, 13, 19)]


def test_lines_keep_their_newline_and_skip_blank_and_short_ones() -> None:
    text = "First line with words\n\n   Indented line here\nshort\n  \nLast line, no newline\n#### 1"
    offsets = chars(text)
    spans = segment(text, offsets, answer_token(text, offsets), "line", min_span_tokens=10)
    assert texts(text, spans) == [
        "First line with words\n",
        "Indented line here\n",
        "Last line, no newline\n",
    ]


@pytest.mark.parametrize("segmenter", ["sentence", "line", "window"])
def test_spans_end_where_the_answer_begins(segmenter: SegmenterName) -> None:
    text = "Adding all the numbers gives the total here #### 55"
    offsets = words(text)
    reasoning = answer_token(text, offsets)
    spans = segment(text, offsets, reasoning, segmenter, min_span_tokens=3)
    assert texts(text, spans) == ["Adding all the numbers gives the total here"]


def test_windows_cover_the_reasoning() -> None:
    text = " ".join(f"w{i}" for i in range(300)) + " #### 1"
    offsets = words(text)
    spans = segment(text, offsets, 300, "window", max_spans=10, window_tokens=16)
    # ceil(300 / 10) = 30 > 16: ten windows of 30 tokens, covering everything.
    assert [(s.token_start, s.token_end) for s in spans] == [(i, i + 30) for i in range(0, 300, 30)]
    assert all(s.kind == "window" for s in spans)


def test_window_partial_last_window() -> None:
    text = " ".join(f"w{i}" for i in range(100))
    offsets = words(text)
    # 16-token windows: six full, then 4 tokens, under min_span_tokens, dropped.
    spans = segment(text, offsets, 100, "window", window_tokens=16, min_span_tokens=5)
    assert [(s.token_start, s.token_end) for s in spans] == [(i, i + 16) for i in range(0, 96, 16)]
    spans = segment(text, offsets, 100, "window", window_tokens=16, min_span_tokens=4)
    assert spans[-1].token_start == 96 and spans[-1].token_end == 100
    # A single short window is kept: it is all the reasoning there is.
    assert [(s.token_start, s.token_end) for s in segment(text, offsets, 3, "window")] == [(0, 3)]


@pytest.mark.parametrize("segmenter", ["calc", "sentence", "line", "window"])
@pytest.mark.parametrize("tokenize", [words, glued, chars])
def test_spans_never_overlap_and_stay_before_the_answer(segmenter: SegmenterName, tokenize: Tokenizer) -> None:
    offsets = tokenize(GSM)
    reasoning = answer_token(GSM, offsets)
    spans = segment(GSM, offsets, reasoning, segmenter, min_span_tokens=3)
    assert spans and len(spans) <= 10
    assert_well_formed(spans, offsets, reasoning)


def test_char_range_to_tokens() -> None:
    # "ab", a gap, "cd", a zero-width special token at 5, "e".
    offsets = [(0, 2), (3, 5), (5, 5), (5, 6)]
    assert char_range_to_tokens(offsets, 1, 4) == (0, 2)
    assert char_range_to_tokens(offsets, 4, 6) == (1, 4)
    assert char_range_to_tokens(offsets, 5, 6) == (2, 4)
    assert char_range_to_tokens(offsets, 2, 3) == (0, 0)  # only the gap


def test_custom_spans_by_chars_and_by_tokens() -> None:
    text = "one two three four #### 4"
    offsets = words(text)
    by_chars = custom_spans(text, offsets, 4, [(8, 13), (1, 2)], by_tokens=False)
    assert [(s.token_start, s.token_end, s.start, s.end, s.kind) for s in by_chars] == [
        (0, 1, 0, 3, "custom"),
        (2, 3, 8, 13, "custom"),
    ]
    by_tokens = custom_spans(text, offsets, 4, [(1, 4), (0, 1)], by_tokens=True)
    assert texts(text, by_tokens) == ["one", "two three four"]


@pytest.mark.parametrize(
    ("ranges", "by_tokens", "message"),
    [
        ([(3, 3)], False, r"\(3, 3\) is empty"),
        ([(-1, 2)], False, r"must lie in \[0, 25\]"),
        ([(0, 26)], False, r"must lie in \[0, 25\]"),
        ([(0, 7)], True, r"must lie in \[0, 6\] \(token offsets\)"),
        ([(0, 5), (4, 9)], False, r"\(0, 5\) and \(4, 9\) overlap"),
        ([(1, 3), (0, 2)], True, r"\(0, 2\) and \(1, 3\) overlap"),
        ([(8, 21)], False, r"answer region, which begins at token 4 \(char 19\)"),
        ([(3, 5)], True, r"answer region, which begins at token 4"),
        ([(3, 4)], False, r"covers no token"),
    ],
)
def test_custom_span_errors_say_what_to_fix(ranges: list[tuple[int, int]], by_tokens: bool, message: str) -> None:
    text = "one two three four #### 4"
    with pytest.raises(ValueError, match=message):
        custom_spans(text, words(text), 4, ranges, by_tokens=by_tokens)


def test_custom_is_not_a_segment_segmenter() -> None:
    with pytest.raises(ValueError, match="custom_spans"):
        segment(GSM, words(GSM), 10, "custom")
