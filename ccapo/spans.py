"""Segmenters: the spans of the reasoning that get intervened on (docs/method.md, "Step by step", step 3).

Everything works on the completion text and its tokens' character offsets, so no tokenizer is
needed here. Only tokens before `reasoning_tokens` are reasoning; every span lies inside it.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

SegmenterName = Literal["calc", "sentence", "line", "window", "custom"]

_NUMBER = r"-?[$€£¥]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?%?"
# GSM-style solutions often name the unit after each number: "42 spools + 65 spools = 107 spools".
_UNIT = r"(?:[ \t]+[A-Za-z]+(?:/[A-Za-z]+)?)?"
_OPERATOR = r"(?:[-+x*/×÷·−]|\\times|\\div|\\cdot)"
_GAP = r"[ \t]*"  # an arithmetic span stays on one line
# `number (op number)+ = number`, e.g. "35 × 3 = 105", "$12 + $3 = $15", "2.5 \times 4 = 10",
# each number optionally followed by one unit word ("32 girls x 2 boys/girl = 64 boys").
_ARITHMETIC = re.compile(
    rf"(?<![\w.,$€£¥]){_NUMBER}(?:{_UNIT}{_GAP}{_OPERATOR}{_GAP}{_NUMBER})+{_UNIT}{_GAP}={_GAP}{_NUMBER}(?![\w])"
)
# Sentence ends: runs of . ! ? (a period between two digits, as in 2.50, is a decimal point), or a
# line break. The paper splits only at blank lines; we also split at single line breaks so that a
# solution written as unpunctuated lines does not become one over-long span that gets skipped.
_SENTENCE_BREAK = re.compile(r"(?P<stop>(?:[!?]|\.(?!\d)|(?<!\d)\.)+)|(?P<blank>\n\s*)")
_LATEX_HEAVY_SHARE = 0.3


@dataclass(frozen=True)
class TokenSpan:
    """A span of completion tokens [token_start, token_end) and its snapped character range.

    `start`/`end` are offsets[token_start][0] and offsets[token_end - 1][1]: the characters of the
    tokens actually intervened on, which may reach past the text the segmenter matched.
    """

    token_start: int
    token_end: int
    start: int
    end: int
    kind: str

    @property
    def n_tokens(self) -> int:
        return self.token_end - self.token_start


def char_range_to_tokens(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """The token range [first, last + 1) of the tokens whose characters overlap [start, end).

    A zero-width token (a special token at offset x) overlaps when start <= x < end. Returns
    (0, 0) when no token overlaps.
    """
    hits = [i for i, (a, b) in enumerate(offsets) if (a < end and b > start if a < b else start <= a < end)]
    return (hits[0], hits[-1] + 1) if hits else (0, 0)


def segment(
    text: str,
    offsets: Sequence[tuple[int, int]],
    reasoning_tokens: int,
    segmenter: SegmenterName,
    *,
    max_spans: int = 10,
    min_span_tokens: int = 5,
    max_span_tokens: int = 50,
    window_tokens: int = 16,
) -> list[TokenSpan]:
    """Split the reasoning (tokens [0, reasoning_tokens)) into at most `max_spans` spans.

    - "calc" (the paper's hybrid): arithmetic spans `number (op number)+ = number`, at most
      max_spans // 2 of them, then sentence spans that do not overlap a kept arithmetic span fill
      the rest. The minimum length applies to sentences only.
    - "sentence": split at . ! ? and blank lines, without surrounding whitespace.
    - "line": each non-blank line from its first non-space character through its newline.
    - "window": consecutive windows of max(window_tokens, ceil(reasoning_tokens / max_spans))
      tokens, which cover the whole reasoning; a last partial window is kept if it has at least
      min_span_tokens tokens or is the only one. Windows are exempt from max_span_tokens: their
      size is chosen to cover the reasoning, and the limit would drop every window of a long one.
    Sentences and lines need at least `min_span_tokens` tokens; spans over `max_span_tokens`
    tokens and LaTeX-heavy spans (over 30% of words contain a backslash) are skipped. Spans are
    clipped to the reasoning, sorted, and never overlap. "custom" spans come from `custom_spans`.
    """
    if segmenter == "custom":
        raise ValueError('segmenter "custom" needs caller-given ranges: call custom_spans(...) instead')
    if max_spans < 1 or window_tokens < 1:
        raise ValueError(f"max_spans ({max_spans}) and window_tokens ({window_tokens}) must be at least 1")
    if not 0 <= reasoning_tokens <= len(offsets):
        raise ValueError(f"reasoning_tokens ({reasoning_tokens}) must lie in [0, {len(offsets)}]")
    reasoning = text[: offsets[reasoning_tokens][0]] if reasoning_tokens < len(offsets) else text

    def usable(span: TokenSpan, min_tokens: int) -> bool:
        fits = min_tokens <= span.n_tokens <= max_span_tokens
        return fits and not _latex_heavy(text[span.start : span.end])

    if segmenter == "window":
        windows = _windows(offsets, reasoning_tokens, max_spans, min_span_tokens, window_tokens)
        return [w for w in windows if not _latex_heavy(text[w.start : w.end])]
    if segmenter == "calc":
        arithmetic = [m.span() for m in _ARITHMETIC.finditer(reasoning)]
        calcs = _evenly(
            [s for s in _to_spans(offsets, reasoning_tokens, arithmetic, "calc") if usable(s, 1)],
            max_spans // 2,
        )
        sentences = [
            s
            for s in _to_spans(offsets, reasoning_tokens, _sentences(reasoning), "sentence")
            if usable(s, min_span_tokens) and not any(_overlap(s, c) for c in calcs)
        ]
        spans = calcs + _evenly(sentences, max_spans - len(calcs))
        return sorted(spans, key=lambda s: s.token_start)
    ranges = _sentences(reasoning) if segmenter == "sentence" else _lines(reasoning)
    candidates = _to_spans(offsets, reasoning_tokens, ranges, segmenter)
    return _evenly([s for s in candidates if usable(s, min_span_tokens)], max_spans)


# How caller-given char spans share a token that straddles their boundary (said in errors and docs).
STRADDLE_RULE = (
    "a token that touches several spans belongs to the one holding its first non-whitespace character, "
    "else its first character, else the first span it touches"
)


def custom_spans(
    text: str,
    offsets: Sequence[tuple[int, int]],
    reasoning_tokens: int,
    ranges: Sequence[tuple[int, int]],
    *,
    by_tokens: bool,
) -> list[TokenSpan]:
    """Caller-given spans: char ranges of `text`, or token ranges if `by_tokens`.

    Char ranges that are disjoint as characters are never rejected, even when one token straddles
    their boundary (a token "\\n   " ends one line and indents the next): such a token belongs to
    exactly one span, by `STRADDLE_RULE`. Raises ValueError, saying what to fix, for an empty or
    out-of-bounds range, a range that keeps no token, a range reaching into the answer region, or
    two ranges that overlap (the message quotes both).
    """
    unit, limit = ("token", len(offsets)) if by_tokens else ("char", len(text))
    for start, end in ranges:
        if start >= end:
            raise ValueError(f"custom span ({start}, {end}) is empty: its start must be below its end")
        if start < 0 or end > limit:
            raise ValueError(f"custom span ({start}, {end}) must lie in [0, {limit}] ({unit} offsets)")
    ordered = sorted((start, end) for start, end in ranges)

    def quoted(start: int, end: int) -> str:
        chars = (offsets[start][0], offsets[end - 1][1]) if by_tokens else (start, end)
        return _quote(text[chars[0] : chars[1]])

    for a, b in pairwise(ordered):
        if b[0] < a[1]:
            raise ValueError(
                f"custom spans {a} and {b} overlap on {unit}s [{b[0]}, {min(a[1], b[1])}): "
                f"{quoted(*a)} and {quoted(*b)}; make them disjoint"
            )
    token_ranges = ordered if by_tokens else _owned_tokens(text, offsets, ordered)
    answer_char = offsets[reasoning_tokens][0] if reasoning_tokens < len(offsets) else len(text)
    spans = []
    for (start, end), (token_start, token_end) in zip(ordered, token_ranges, strict=True):
        if token_start == token_end:
            if not char_range_to_tokens(offsets, start, end)[1]:
                raise ValueError(f"custom span ({start}, {end}) covers no token: widen it to cover some text")
            raise ValueError(
                f"custom span ({start}, {end}) {quoted(start, end)} keeps no token: every token it touches "
                f"belongs to a neighbouring span ({STRADDLE_RULE}); widen it or merge it with its neighbour"
            )
        if token_end > reasoning_tokens:
            raise ValueError(
                f"custom span ({start}, {end}) reaches into the answer region, which begins at token "
                f"{reasoning_tokens} (char {answer_char}): end it there or earlier"
            )
        spans.append(_span(offsets, token_start, token_end, "custom"))
    return spans


def _owned_tokens(
    text: str, offsets: Sequence[tuple[int, int]], ranges: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """The token range [first, last + 1) each sorted, disjoint char range owns; (0, 0) for none.

    A token touching one range belongs to it; a token touching several goes by `STRADDLE_RULE`,
    so neighbouring ranges never share a token.
    """
    starts, ends = [s for s, _ in ranges], [e for _, e in ranges]
    owned: list[list[int]] = [[] for _ in ranges]
    for token, (a, b) in enumerate(offsets):
        # Ranges ending after a and starting before b (a zero-width token: holding a).
        touched = range(bisect_right(ends, a), bisect_left(starts, b) if a < b else bisect_right(starts, a))
        if not touched:
            continue
        anchor = _anchor(text, a, b)
        owner = next((k for k in touched if starts[k] <= anchor < ends[k]), touched[0])
        owned[owner].append(token)
    return [(tokens[0], tokens[-1] + 1) if tokens else (0, 0) for tokens in owned]


def _anchor(text: str, start: int, end: int) -> int:
    """The offset of the first non-whitespace character in text[start:end], else `start`."""
    piece = text[start:end]
    return start + len(piece) - len(piece.lstrip()) if piece.strip() else start


def _quote(piece: str, limit: int = 40) -> str:
    return repr(piece if len(piece) <= limit else piece[: limit - 3] + "...")


def _span(offsets: Sequence[tuple[int, int]], token_start: int, token_end: int, kind: str) -> TokenSpan:
    return TokenSpan(token_start, token_end, offsets[token_start][0], offsets[token_end - 1][1], kind)


def _to_spans(
    offsets: Sequence[tuple[int, int]], reasoning_tokens: int, ranges: list[tuple[int, int]], kind: str
) -> list[TokenSpan]:
    """Snap sorted char ranges to tokens, clipped to the reasoning.

    Neighbouring ranges can snap onto a shared token (a token like ".\\n   " ends one line and
    starts the next), so each span starts after the previous one ends; spans left empty go.
    """
    spans: list[TokenSpan] = []
    previous_end = 0
    for start, end in ranges:
        token_start, token_end = char_range_to_tokens(offsets, start, end)
        token_start, token_end = max(token_start, previous_end), min(token_end, reasoning_tokens)
        if token_start < token_end:
            spans.append(_span(offsets, token_start, token_end, kind))
            previous_end = token_end
    return spans


def _sentences(text: str) -> list[tuple[int, int]]:
    """Char ranges of the sentences of `text`, without surrounding whitespace."""
    pieces: list[tuple[int, int]] = []
    cursor = 0
    for m in _SENTENCE_BREAK.finditer(text):
        end = m.end() if m.group("stop") else m.start()
        pieces.append((cursor, end))
        cursor = m.end()
    pieces.append((cursor, len(text)))
    return [r for r in (_strip(text, start, end) for start, end in pieces) if r[0] < r[1]]


def _lines(text: str) -> list[tuple[int, int]]:
    """Char ranges of the non-blank lines of `text`, from the first non-space char through "\\n".

    Leading indentation is left out so that a token carrying "\\n" plus the next line's indent
    belongs to the line it ends.
    """
    lines: list[tuple[int, int]] = []
    for m in re.finditer(r"[^\n]*\n?", text):
        line = m.group()
        if line.strip():
            lines.append((m.start() + len(line) - len(line.lstrip()), m.end()))
    return lines


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    piece = text[start:end]
    return start + len(piece) - len(piece.lstrip()), start + len(piece.rstrip())


def _windows(
    offsets: Sequence[tuple[int, int]], reasoning_tokens: int, max_spans: int, min_tokens: int, size: int
) -> list[TokenSpan]:
    width = max(size, math.ceil(reasoning_tokens / max_spans))
    bounds = [(start, min(start + width, reasoning_tokens)) for start in range(0, reasoning_tokens, width)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_tokens:
        bounds.pop()
    return [_span(offsets, start, end, "window") for start, end in bounds]


def _latex_heavy(text: str) -> bool:
    words = text.split()
    return bool(words) and sum("\\" in w for w in words) > _LATEX_HEAVY_SHARE * len(words)


def _overlap(a: TokenSpan, b: TokenSpan) -> bool:
    return a.token_start < b.token_end and b.token_start < a.token_end


def _evenly(spans: list[TokenSpan], k: int) -> list[TokenSpan]:
    """At most k spans, evenly spaced over `spans` (first and last included).

    Taking the first k would probe only the beginning of a long trace; spreading the choice
    covers the whole of it, deterministically.
    """
    n = len(spans)
    if n <= k:
        return spans
    if k <= 1:
        return spans[:k]
    return [spans[int(i * (n - 1) / (k - 1) + 0.5)] for i in range(k)]
