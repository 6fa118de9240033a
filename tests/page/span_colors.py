"""Reading the view's span colors back: which hue a computed background has, and how strong it is."""

from __future__ import annotations

from typing import Literal

NEUTRAL = (247, 247, 247)  # the view's background for a drop of 0
FULL_SUPPORT = (127, 188, 65)  # ... and for the largest positive drop shown


def rgb(css: str) -> tuple[int, int, int]:
    """A computed color, "rgb(1, 2, 3)", as numbers."""
    red, green, blue = (int(part) for part in css.removeprefix("rgb(").removesuffix(")").split(","))
    return red, green, blue


def hue(color: tuple[int, int, int]) -> Literal["support", "distractor", "neutral"]:
    """Green leads in the support hue; red and blue lead in the (magenta) distractor hue."""
    red, green, blue = color
    if green > red and green > blue:
        return "support"
    if red > green and blue > green:
        return "distractor"
    return "neutral"


def strength(color: tuple[int, int, int]) -> int:
    """How far a shade is from neutral: it grows with |drop|."""
    return sum(abs(c - n) for c, n in zip(color, NEUTRAL, strict=True))
