"""From span drops to per-token loss weights (docs/method.md, "Step by step", step 6)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

Scheme = Literal["paper", "normalized", "uniform", "inverted", "random"]


class WeightConfig(BaseModel):
    """How drops become token weights. The default, "normalized", keeps the mean weight at 1, so a loss
    multiplied by the weights keeps its learning rate; `scheme="paper"` reproduces the paper's mapping
    (mean weight about 2-3; its knobs are `boost` to `conservation`).

    The schemes are described in `compute_token_weights`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    scheme: Scheme = Field(
        "normalized",
        description='"normalized" (mean 1), "paper" (the paper\'s mapping), the controls "inverted" and '
        '"random", or "uniform" (every token 1)',
    )
    boost: float = Field(4.0, gt=0, description="weight of the most important reasoning token")
    min_weight: float = Field(0.5, ge=0, description="weight at importance 0")
    answer_weight: float = Field(1.5, ge=0, description="weight of every answer-region token")
    base_importance: float = Field(0.2, description="raw importance of every reasoning token before span drops")
    format_factor: float = Field(0.1, ge=0, description="importance multiplier of formatting-only tokens")
    conservation: bool = Field(False, description="rescale the completion's weights to mean 1")
    normalized_bounds: tuple[float, float] = Field(
        (0.5, 2.0), description='"normalized": lowest and highest weight a token can get'
    )
    normalized_temperature: float = Field(
        0.25, gt=0, description='"normalized": per-token drop (nats) that moves a weight by 1 before bounding'
    )
    seed: int = Field(0, description='"random": seed; the same seed and trace give the same weights')

    @field_validator("normalized_bounds")
    @classmethod
    def _bounds_around_one(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        # Weights are 1 + c * z with mean 1, so the bounds must allow 1 itself.
        if not bounds[0] <= 1.0 <= bounds[1]:
            raise ValueError(f"normalized_bounds {bounds} must satisfy lo <= 1 <= hi")
        return bounds


_FORMAT_CHARS = frozenset("#=-*_")


def compute_token_weights(
    n_tokens: int,
    reasoning_end: int,
    answer_end: int,
    spans: Sequence[tuple[int, int, float]],
    tokens: Sequence[str],
    config: WeightConfig,
    seed_key: int = 0,
    calculations: Sequence[tuple[int, int]] = (),
) -> list[float]:
    """Per-token loss weights for one completion of `n_tokens` tokens.

    Tokens [0, reasoning_end) are reasoning, [reasoning_end, answer_end) the answer region and
    [answer_end, n_tokens) trailing EOS/padding. `spans` are (token_start, token_end, drop) over
    reasoning tokens; `tokens` are the token strings, used to spot formatting-only tokens.
    `calculations` are token ranges of arithmetic spans, whose tokens are never formatting: there
    `*`, `-` and `=` are operators and keep their span's weight.

    Schemes:
    - "paper" (docs/method.md, step 6): raw = base_importance + drop / |span| on span tokens;
      min-max normalized over the reasoning into importance in [0.5, 1] (all equal: 0.5);
      formatting-only tokens outside `calculations` get importance x format_factor; w = min_weight + (boost -
      min_weight) * importance; answer tokens answer_weight; padding 1; with `conservation`
      the non-padding weights are rescaled to mean 1.
    - "inverted": as "paper" with the normalized order reversed (importance 0.5 + (1 - norm) / 2);
      all equal still gives 0.5, as there is no order to reverse.
    - "random": importance ~ U(0, 1) per reasoning token, seeded by (config.seed, seed_key);
      then as "paper" from the formatting factor on.
    - "uniform": every token 1.
    - "normalized" (ccapo's, the default): s = per-token drop (drop / |span|, 0 on unprobed tokens);
      z = (s - mean(s)) / normalized_temperature over the reasoning; w = 1 + c * z, where c is the
      largest value <= 1 that keeps every w inside normalized_bounds; answer and padding tokens 1.
      The completion's mean weight is exactly 1, weights are bounded and monotone in the drop, and
      all-equal drops (or no spans) give uniform weights. No formatting factor, no conservation.
    """
    if not 0 <= reasoning_end <= answer_end <= n_tokens or len(tokens) != n_tokens:
        raise ValueError(
            f"need 0 <= reasoning_end ({reasoning_end}) <= answer_end ({answer_end}) <= n_tokens "
            f"({n_tokens}) and one token string per token (got {len(tokens)})"
        )
    weights = np.ones(n_tokens)
    if config.scheme == "uniform":
        return weights.tolist()
    drops = _per_token_drops(reasoning_end, spans)
    if config.scheme == "normalized":
        weights[:reasoning_end] = _normalized(drops, config)
        return weights.tolist()
    if config.scheme == "random":
        # numpy wants non-negative seeds, and a seed_key from hash() may be negative.
        rng = np.random.default_rng((config.seed % 2**64, seed_key % 2**64))
        importance = rng.uniform(0.0, 1.0, reasoning_end)
    else:
        importance = _ranked_importance(config.base_importance + drops, config.scheme == "inverted")
    formatting = np.array([_is_formatting(t) for t in tokens[:reasoning_end]], dtype=bool)
    for start, end in calculations:
        formatting[start:end] = False
    importance[formatting] *= config.format_factor
    weights[:reasoning_end] = config.min_weight + (config.boost - config.min_weight) * importance
    weights[reasoning_end:answer_end] = config.answer_weight
    if config.conservation and answer_end > 0:
        mean = weights[:answer_end].mean()
        if mean > 0:  # all-zero weights (min_weight = answer_weight = 0 ...) cannot be rescaled
            weights[:answer_end] /= mean
    return weights.tolist()


def _per_token_drops(reasoning_end: int, spans: Sequence[tuple[int, int, float]]) -> np.ndarray:
    """Each span's drop spread evenly over its tokens; 0 on unprobed reasoning tokens."""
    drops = np.zeros(reasoning_end)
    for start, end, drop in spans:
        if not 0 <= start < end <= reasoning_end:
            raise ValueError(f"span ({start}, {end}) must be a non-empty range inside [0, {reasoning_end})")
        drops[start:end] += drop / (end - start)
    return drops


def _ranked_importance(raw: np.ndarray, inverted: bool) -> np.ndarray:
    """Min-max normalize `raw` into [0.5, 1] (reversed if `inverted`); all equal gives 0.5."""
    spread = np.ptp(raw) if raw.size else 0.0
    if spread == 0:
        return np.full(raw.shape, 0.5)
    norm = (raw - raw.min()) / spread
    return 0.5 + 0.5 * (1.0 - norm if inverted else norm)


def _normalized(drops: np.ndarray, config: WeightConfig) -> np.ndarray:
    if not drops.size:
        return drops
    z = (drops - drops.mean()) / config.normalized_temperature
    lo, hi = config.normalized_bounds
    # Shrink the scale until the most extreme token touches its bound; the mean stays 1.
    scale = 1.0
    if z.max() > 0:
        scale = min(scale, (hi - 1.0) / z.max())
    if z.min() < 0:
        scale = min(scale, (1.0 - lo) / -z.min())
    return 1.0 + scale * z


def _is_formatting(token: str) -> bool:
    """Formatting-only tokens: markdown/rule characters such as "####", "==", "--", "**"."""
    stripped = token.strip()
    return bool(stripped) and set(stripped) <= _FORMAT_CHARS
