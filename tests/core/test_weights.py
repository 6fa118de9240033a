"""From span drops to per-token loss weights."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from ccapo.weights import WeightConfig, compute_token_weights

# 5 reasoning tokens (" ==" is formatting-only), 2 answer tokens, 1 padding token.
TOKENS = ["We", " add", " 2", "+", " ==", "####", " 5", "<eos>"]
N, REASONING_END, ANSWER_END = 8, 5, 7
SPANS = [(1, 3, 0.4), (3, 4, -0.1)]  # a supporting span and a distractor
NON_FORMATTING_REASONING = [0, 1, 2, 3]


def weights(
    scheme: str, spans: Sequence[tuple[int, int, float]] = SPANS, seed_key: int = 0, **config: Any
) -> list[float]:
    cfg = WeightConfig(scheme=scheme, **config)
    return compute_token_weights(N, REASONING_END, ANSWER_END, spans, TOKENS, cfg, seed_key)


def test_paper_matches_hand_computed_values() -> None:
    # raw  = 0.2 + drop / |span|   = [0.2, 0.2 + 0.4/2, 0.2 + 0.4/2, 0.2 - 0.1/1, 0.2]
    #                               = [0.2, 0.4, 0.4, 0.1, 0.2]
    # norm = (raw - 0.1) / 0.3      = [1/3, 1, 1, 0, 1/3]
    # imp  = 0.5 + 0.5 * norm       = [2/3, 1, 1, 0.5, 2/3], then " ==" x 0.1 -> 1/15
    # w    = 0.5 + 3.5 * imp        = [0.5 + 7/3, 4.0, 4.0, 2.25, 0.5 + 3.5/15]
    # answer 1.5, padding 1.0
    expected = [2.8333333333, 4.0, 4.0, 2.25, 0.7333333333, 1.5, 1.5, 1.0]
    assert weights("paper") == pytest.approx(expected)


def test_paper_without_spans_gives_importance_one_half() -> None:
    # All raw equal: imp 0.5 -> w = 0.5 + 3.5 * 0.5 = 2.25; " ==": 0.5 + 3.5 * 0.05 = 0.675.
    assert weights("paper", spans=[]) == pytest.approx([2.25, 2.25, 2.25, 2.25, 0.675, 1.5, 1.5, 1.0])


@pytest.mark.parametrize("scheme", ["paper", "inverted", "random"])
def test_conservation_gives_mean_one(scheme: str) -> None:
    plain = np.array(weights(scheme))
    conserved = np.array(weights(scheme, conservation=True))
    assert conserved[:ANSWER_END].mean() == pytest.approx(1.0)
    assert conserved[ANSWER_END:] == pytest.approx([1.0])  # padding is left alone
    assert conserved[:ANSWER_END] == pytest.approx(plain[:ANSWER_END] / plain[:ANSWER_END].mean())


def test_inverted_reverses_the_paper_order() -> None:
    paper, inverted = weights("paper"), weights("inverted")
    for i, j in itertools.combinations(NON_FORMATTING_REASONING, 2):
        assert np.sign(paper[i] - paper[j]) == -np.sign(inverted[i] - inverted[j])
    # imp' = 0.5 + 0.5 * (1 - norm) = [5/6, 0.5, 0.5, 1, ...]: w = 0.5 + 3.5 * imp'.
    assert inverted[:4] == pytest.approx([0.5 + 3.5 * 5 / 6, 2.25, 2.25, 4.0])
    assert inverted[5:] == [1.5, 1.5, 1.0]


def test_random_is_reproducible_per_seed() -> None:
    first = weights("random", seed=3, seed_key=7)
    assert weights("random", seed=3, seed_key=7) == first
    assert weights("random", seed=4, seed_key=7) != first
    assert weights("random", seed=3, seed_key=8) != first
    assert weights("random", seed=3, seed_key=-8) == weights("random", seed=3, seed_key=-8)
    assert all(0.5 <= w <= 4.0 for w in first[:REASONING_END])
    assert first[REASONING_END:] == [1.5, 1.5, 1.0]


def test_uniform_is_all_ones() -> None:
    assert weights("uniform") == [1.0] * N


def test_normalized_has_mean_one_and_stays_in_bounds() -> None:
    result = np.array(weights("normalized"))
    assert result[:ANSWER_END].mean() == pytest.approx(1.0)
    assert result[REASONING_END:] == pytest.approx([1.0, 1.0, 1.0])
    assert result.min() >= 0.5 - 1e-12 and result.max() <= 2.0 + 1e-12
    # s = [0, 0.2, 0.2, -0.1, 0], mean 0.06, z = (s - 0.06) / 0.25 = [-0.24, 0.56, 0.56, -0.64, -0.24];
    # unscaled, the distractor would get 1 - 0.64 < 0.5: c = (1 - 0.5) / 0.64 = 0.78125 (< 1 / 0.56).
    assert result[:REASONING_END] == pytest.approx(1 + 0.78125 * np.array([-0.24, 0.56, 0.56, -0.64, -0.24]))


def test_normalized_is_unscaled_when_inside_bounds() -> None:
    # s = [0, 0.05, 0.05, 0, 0], mean 0.02, z = [-0.08, 0.12, 0.12, -0.08, -0.08]: c = 1.
    result = weights("normalized", spans=[(1, 3, 0.1)])
    assert result[:REASONING_END] == pytest.approx([0.92, 1.12, 1.12, 0.92, 0.92])


def test_normalized_is_monotone_in_the_drop() -> None:
    spans = [(0, 1, 5.0), (1, 2, 0.3), (2, 3, 0.0), (3, 4, -0.2), (4, 5, -3.0)]
    result = weights("normalized", spans=spans, normalized_bounds=(0.2, 3.0))
    assert result[:REASONING_END] == sorted(result[:REASONING_END], reverse=True)
    # mean 0.42, z = (s - 0.42) / 0.25 = [18.32, ..., -13.68]: the low side binds, c = 0.8 / 13.68.
    assert result[4] == pytest.approx(0.2)
    assert np.mean(result[:ANSWER_END]) == pytest.approx(1.0)


def test_normalized_without_spans_is_uniform() -> None:
    assert weights("normalized", spans=[]) == [1.0] * N
    assert weights("normalized", spans=[(0, 5, 1.0)]) == pytest.approx([1.0] * N)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="inside"):
        weights("paper", spans=[(4, 6, 1.0)])  # reaches into the answer region
    with pytest.raises(ValueError, match="one token string per token"):
        compute_token_weights(N, REASONING_END, ANSWER_END, [], TOKENS[:-1], WeightConfig())
    with pytest.raises(ValidationError, match="lo <= 1 <= hi"):
        WeightConfig(normalized_bounds=(1.2, 2.0))
