"""Locating the answer region of a completion (docs/method.md, "Step by step", step 1)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# Tried in this order; the first kind that occurs anywhere in the completion wins.
MARKERS = ("####", "\\boxed{", "final answer", "the answer is")

# A plain number: optional sign, thousands commas, decimals. The look-behind keeps "5-3" from
# reading as "5" and "-3", and keeps digits glued to a word ("x2") out.
_NUMBER = re.compile(r"(?<![\w.,])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


@dataclass(frozen=True)
class AnswerLocation:
    """Where the answer sits in a completion, as character offsets.

    `start` is where the marker begins; `end` is where the answer ends, with trailing whitespace
    and trailing special-token strings removed; `marker` is the MARKERS entry that matched.
    """

    start: int
    end: int
    marker: str


def find_answer(completion: str, trailing_specials: Sequence[str] = ()) -> AnswerLocation | None:
    """Find the answer region: from the last occurrence of the highest-priority marker to the end.

    Markers are tried in MARKERS order, case-insensitively; the first kind that occurs anywhere
    wins and its last occurrence is used, since earlier ones belong to the reasoning. The region
    ends before trailing whitespace and any trailing `trailing_specials` (e.g. "<|im_end|>"),
    interleaved with whitespace in any order. Returns None when no marker occurs, or when nothing
    but whitespace and specials follows the marker: there is no answer to score.
    """
    for marker in MARKERS:
        matches = list(re.finditer(re.escape(marker), completion, re.IGNORECASE))
        if not matches:
            continue
        start = matches[-1].start()
        end = _strip_trailing(completion, trailing_specials)
        if not completion[start + len(marker) : end].strip():
            return None
        return AnswerLocation(start=start, end=end, marker=marker)
    return None


def _strip_trailing(text: str, specials: Sequence[str]) -> int:
    """The length of `text` without trailing whitespace and trailing special-token strings."""
    end = len(text.rstrip())
    stripped = True
    while stripped:
        stripped = False
        for special in specials:
            if special and text.endswith(special, 0, end):
                end = len(text[: end - len(special)].rstrip())
                stripped = True
    return end


def reference_answer_text(completion: str, location: AnswerLocation | None, reference: str) -> str:
    """The completion's answer region with `reference` written in its place, in the same format.

    Rules, applied to `completion[location.start:location.end]`:
    - `\\boxed{...}`: the content of the balanced braces becomes the reference; if the braces
      never close (a truncated completion), everything after the marker does, and the brace is
      closed.
    - other markers: the last number after the marker (e.g. "-3", "1,000", "2.50"; of "$12"
      only "12") becomes the reference, so units and surrounding words are kept;
    - no number after the marker: the marker text is kept and what follows becomes
      " " + reference.
    With `location=None` (no marker in the completion) the answer is "\\n#### " + reference.
    """
    if location is None:
        return "\n#### " + reference
    region = completion[location.start : location.end]
    body = len(location.marker)
    if location.marker == "\\boxed{":
        close = _closing_brace(region, body)
        if close is None:
            return region[:body] + reference + "}"
        return region[:body] + reference + region[close:]
    numbers = list(_NUMBER.finditer(region, body))
    if not numbers:
        return region[:body] + " " + reference
    last = numbers[-1]
    return region[: last.start()] + reference + region[last.end() :]


def _closing_brace(text: str, start: int) -> int | None:
    """Index of the brace closing the one opened just before `start`, or None if it never closes."""
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return None
