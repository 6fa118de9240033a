"""`score_token_batch` and `apply_token_weights`: the framework-free core every adapter stands on."""

from __future__ import annotations

import pytest
import torch
from adapter_traces import COMPLETIONS, NO_MARKER, PROMPTS, encode, pad
from ccapo_adapters.batch import apply_token_weights, score_token_batch
from ccapo_client import RemoteScorer


@pytest.fixture(scope="module")
def ids(tokenizer):
    return encode(tokenizer, PROMPTS), encode(tokenizer, COMPLETIONS, eos=True)


@pytest.fixture(scope="module")
def listed(scorer, ids):
    """The reference: weights of the two traces given as plain id lists."""
    return score_token_batch(scorer, *ids)


def test_lists_give_one_weight_per_completion_token(listed, ids):
    completions = ids[1]
    assert listed.weights.shape == (2, max(map(len, completions)))
    assert listed.errors == [None, None]
    for row, completion in enumerate(completions):
        assert listed.results[row].status == "ok"
        assert listed.weights[row, : len(completion)].tolist() == pytest.approx(listed.results[row].token_weights)
        assert not torch.all(listed.weights[row, : len(completion)] == 1.0)  # really weighted
    short = min(range(2), key=lambda r: len(completions[r]))
    assert torch.all(listed.weights[short, len(completions[short]) :] == 1.0)  # list rows padded with 1.0


def test_padded_tensors_align_with_the_callers_tokens(scorer, ids, listed, tokenizer):
    prompts, completions = ids
    prompt_ids, prompt_mask = pad(prompts, tokenizer.pad_token_id, "left")
    completion_ids, completion_mask = pad(completions, tokenizer.pad_token_id, "right")
    extra = torch.full((2, 3), tokenizer.pad_token_id)  # a wider batch than the longest completion
    completion_ids = torch.cat([completion_ids, extra], 1)
    completion_mask = torch.cat([completion_mask, torch.zeros_like(extra)], 1)

    padded = score_token_batch(
        scorer, prompt_ids, completion_ids, prompt_mask=prompt_mask, completion_mask=completion_mask
    )
    assert padded.weights.shape == completion_ids.shape
    real = completion_mask.bool()
    for row, completion in enumerate(completions):
        assert padded.weights[row][real[row]].tolist() == pytest.approx(listed.weights[row, : len(completion)].tolist())
    assert torch.all(padded.weights[~real] == 1.0)


def test_unscorable_row_stays_uniform_without_error(scorer, tokenizer, ids):
    prompts, completions = ids
    batch = score_token_batch(scorer, prompts, [completions[0], *encode(tokenizer, [NO_MARKER])])
    assert batch.results[1].status == "unscorable"
    assert batch.errors == [None, None]
    assert torch.all(batch.weights[1] == 1.0)
    assert not torch.all(batch.weights[0] == 1.0)
    metrics = batch.metrics()
    assert metrics["weights/scored_share"] == 0.5
    assert metrics["weights/mean_unscored_rows"] == 1.0
    assert metrics["weights/mean_scored_rows"] == pytest.approx(float(batch.weights[0].mean()))
    probed = sum(span.token_end - span.token_start for span in batch.results[0].spans)
    assert metrics["weights/probed_token_share"] == pytest.approx(probed / batch.weights.numel())


def test_a_bad_row_fails_alone(scorer, ids, tokenizer, listed):
    prompts, completions = ids
    bad = [*completions[1][:-2], len(tokenizer) + 7]  # an id outside the vocabulary
    batch = score_token_batch(scorer, prompts, [completions[0], bad])
    assert batch.errors[0] is None and "vocab" in batch.errors[1]
    assert batch.failed == 1
    assert torch.all(batch.weights[1] == 1.0)
    # The same weights as in a batch of good rows, up to the float noise of a different batch shape.
    assert batch.weights[0].tolist() == pytest.approx(listed.weights[0, : len(completions[0])].tolist(), rel=1e-4)


class BrokenScorer:
    def score(self, traces, config=None):
        raise RuntimeError("server down")


def test_a_failing_scorer_leaves_uniform_weights_and_counts_errors(ids):
    batch = score_token_batch(BrokenScorer(), *ids)
    assert torch.all(batch.weights == 1.0)
    assert batch.failed == 2
    assert all("server down" in error for error in batch.errors)
    assert batch.metrics()["weights/failed"] == 2.0


def test_weighting_modes(scorer, ids, listed):
    uniform = score_token_batch(None, *ids, weighting="uniform")  # needs no scorer
    assert torch.all(uniform.weights == 1.0) and uniform.results == [None, None]
    inverted = score_token_batch(scorer, *ids, weighting="inverted")
    random_ = score_token_batch(scorer, *ids, weighting="random")
    for other in (inverted, random_):
        assert not torch.allclose(other.weights, listed.weights)
    # The controls are the paper's weight schemes applied to the same drops.
    for weighting, batch in (("inverted", inverted), ("random", random_)):
        explicit = score_token_batch(scorer, *ids, config={"weights": {"scheme": weighting}})
        torch.testing.assert_close(batch.weights, explicit.weights)
    with pytest.raises(ValueError, match="needs a scorer"):
        score_token_batch(None, *ids)
    with pytest.raises(ValueError, match="unknown weighting"):
        score_token_batch(scorer, *ids, weighting="bogus")


def test_a_control_arm_applies_its_scheme_and_refuses_a_contradicting_one(scorer, ids):
    """The arm decides the scheme: "paper" names the mapping the controls invert; "normalized" has no
    control, so asking for both is an error, not silently the control's weights."""
    inverted = score_token_batch(scorer, *ids, weighting="inverted", config={"weights": {"scheme": "paper"}})
    explicit = score_token_batch(scorer, *ids, config={"weights": {"scheme": "inverted"}})
    torch.testing.assert_close(inverted.weights, explicit.weights)
    with pytest.raises(ValueError, match="contradicts scheme 'normalized'"):
        score_token_batch(scorer, *ids, weighting="inverted", config={"weights": {"scheme": "normalized"}})
    with pytest.raises(ValueError, match="set weighting 'random'"):
        score_token_batch(scorer, *ids, weighting="counterfactual", config={"weights": {"scheme": "random"}})


def test_remote_scoring_matches_in_process(server_url, ids, listed, tokenizer):
    prompts, completions = ids
    prompt_ids, prompt_mask = pad(prompts, tokenizer.pad_token_id, "left")
    completion_ids, completion_mask = pad(completions, tokenizer.pad_token_id, "right")
    with RemoteScorer(server_url) as remote:
        batch = score_token_batch(
            remote, prompt_ids, completion_ids, prompt_mask=prompt_mask, completion_mask=completion_mask
        )
    assert batch.errors == [None, None]
    torch.testing.assert_close(batch.weights, listed.weights, atol=1e-4, rtol=1e-4)


def test_apply_token_weights():
    weights = torch.tensor([[2.0, 0.5, 1.0], [0.0, 3.0, 1.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    advantages = torch.tensor([1.0, -2.0])
    out = apply_token_weights(advantages, weights, mask)
    assert out.tolist() == [[2.0, 0.5, 1.0], [-0.0, -6.0, -2.0]]
    losses = torch.full((2, 3), 4.0)
    masked_out = apply_token_weights(losses, torch.full((2, 3), 9.0), mask)
    assert masked_out[0, 2] == 4.0  # padding passes through unchanged
    with pytest.raises(ValueError, match="same shape"):
        apply_token_weights(torch.ones(2, 4), weights)
