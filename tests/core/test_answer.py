"""Finding the answer region and writing the reference answer in its format."""

from __future__ import annotations

import pytest

from ccapo.answer import MARKERS, AnswerLocation, find_answer, reference_answer_text

SPECIALS = ("<|im_end|>", "<|endoftext|>")


@pytest.mark.parametrize(
    ("completion", "marker", "answer"),
    [
        ("So 6 * 7 = 42.\n#### 42", "####", "#### 42"),
        ("So the result is \\boxed{42}.", "\\boxed{", "\\boxed{42}."),
        ("Adding up.\nFinal answer: 42", "final answer", "Final answer: 42"),
        ("Adding up, the answer is 42.", "the answer is", "the answer is 42."),
    ],
)
def test_each_marker_is_found(completion: str, marker: str, answer: str) -> None:
    location = find_answer(completion)
    assert location is not None
    assert location.marker == marker
    assert completion[location.start : location.end] == answer


def test_markers_are_tried_in_priority_order() -> None:
    # "the answer is" comes after "####" in the text but later in MARKERS, so "####" wins.
    completion = "#### 42\nSo the answer is 42"
    location = find_answer(completion)
    assert location == AnswerLocation(start=0, end=len(completion), marker="####")
    assert MARKERS.index("####") < MARKERS.index("the answer is")


def test_last_occurrence_is_used() -> None:
    completion = "First guess #### 40, but recheck: 6 * 7 = 42.\n#### 42"
    location = find_answer(completion)
    assert location is not None
    assert completion[location.start :] == "#### 42"


def test_markers_are_case_insensitive() -> None:
    completion = "Thus, THE ANSWER IS 42."
    location = find_answer(completion)
    assert location is not None
    assert location.marker == "the answer is"
    assert completion[location.start : location.end] == "THE ANSWER IS 42."


def test_trailing_whitespace_and_specials_are_stripped() -> None:
    completion = "So 42.\n#### 42 \n<|im_end|>\n<|endoftext|><|endoftext|>  "
    location = find_answer(completion, SPECIALS)
    assert location is not None
    assert completion[location.start : location.end] == "#### 42"


def test_specials_are_kept_unless_named() -> None:
    location = find_answer("#### 42<|im_end|>")
    assert location is not None
    assert location.end == len("#### 42<|im_end|>")


@pytest.mark.parametrize("completion", ["So 42.\n####   \n", "So 42.\n#### <|im_end|>", "No marker, 42."])
def test_nothing_to_score_gives_none(completion: str) -> None:
    assert find_answer(completion, SPECIALS) is None


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("So 42.\n#### 42", "#### 40"),
        ("So \\boxed{\\frac{84}{2}} it is.", "\\boxed{40} it is."),
        ("Total cost.\n#### $1,000", "#### $40"),
        ("The answer is 12 apples.", "The answer is 40 apples."),
        ("Final answer: -2.50 dollars", "Final answer: 40 dollars"),
        ("From 3 to 5, the answer is 5", "the answer is 40"),
        ("The answer is unknown", "The answer is 40"),
        ("Truncated: \\boxed{4", "\\boxed{40}"),
    ],
)
def test_reference_answer_text(completion: str, expected: str) -> None:
    location = find_answer(completion, SPECIALS)
    assert reference_answer_text(completion, location, "40") == expected


def test_reference_answer_text_without_marker() -> None:
    assert reference_answer_text("No marker here.", None, "40") == "\n#### 40"
